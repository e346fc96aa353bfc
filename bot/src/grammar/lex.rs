//! Tokenizer: splits a command line into words, honouring straight and smart quotes.
//!
//! A quote opens only at the start of a word and closes at the next quote of the same family
//! (`"` `“` `”` or `'` `‘` `’`) that is followed by whitespace or the end of the input, so
//! apostrophes inside words (`we're`, `it’s`) are plain text.

use super::error::ParseErrorKind;

/// Longest accepted input, in bytes.
pub const MAX_INPUT_BYTES: usize = 4096;

/// One word of input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub text: String,
    /// Written in quotes: never a flag, may be empty or hold whitespace.
    pub quoted: bool,
}

/// The two families of quote characters; any member closes a quote opened by any other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QuoteFamily {
    Double,
    Single,
}

pub(crate) fn quote_family(c: char) -> Option<QuoteFamily> {
    match c {
        '"' | '“' | '”' => Some(QuoteFamily::Double),
        '\'' | '‘' | '’' => Some(QuoteFamily::Single),
        _ => None,
    }
}

/// A control character that is not whitespace (tab, newline and the like are fine).
pub(crate) fn is_forbidden_control(c: char) -> bool {
    c.is_control() && !c.is_whitespace()
}

pub(crate) fn tokenize(input: &str) -> Result<Vec<Token>, ParseErrorKind> {
    if input.len() > MAX_INPUT_BYTES {
        return Err(ParseErrorKind::TooLong {
            len: input.len(),
            max: MAX_INPUT_BYTES,
        });
    }
    if let Some(ch) = input.chars().find(|&c| is_forbidden_control(c)) {
        return Err(ParseErrorKind::ControlCharacter { ch });
    }
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if c.is_whitespace() {
            i += 1;
        } else if let Some(family) = quote_family(c) {
            let close = (i + 1..chars.len()).find(|&j| {
                quote_family(chars[j]) == Some(family)
                    && chars.get(j + 1).is_none_or(|next| next.is_whitespace())
            });
            let Some(close) = close else {
                return Err(ParseErrorKind::UnterminatedQuote { quote: c });
            };
            tokens.push(Token {
                text: chars[i + 1..close].iter().collect(),
                quoted: true,
            });
            i = close + 1;
        } else {
            let start = i;
            while chars.get(i).is_some_and(|c| !c.is_whitespace()) {
                i += 1;
            }
            tokens.push(Token {
                text: chars[start..i].iter().collect(),
                quoted: false,
            });
        }
    }
    Ok(tokens)
}
