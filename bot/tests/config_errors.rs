//! Bad configuration through the real binary: each kind of mistake gives its specific message
//! with the key path, every problem is listed at once, and secrets never appear in output.

use std::process::Command;

const GOOD: &str = r#"
[store]
url = "sqlite://STORE"

[[people]]
name = "alice"
roles = ["sre-lead"]
slack = "UALICE"

[[people]]
name = "bob"
roles = ["oncall"]

[regions.us-east-1]
role = "primary"

[regions.us-west-2]
role = "secondary"

[slack]
signing_secret = "${TEST_SLACK_SIGNING}"
bot_token = "${TEST_SLACK_TOKEN}"
incident_channel = "C123"

[[runbooks]]
name = "failover"
command = "failover"
request_roles = ["oncall"]
approve_roles = ["sre-lead"]

[[runbooks.steps]]
name = "promote"
type = "exec"
with = { command = "true", args = ["{region}"] }
"#;

const SECRET: &str = "xoxb-super-secret-0123456789";

fn check(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drbot.toml");
    let text = text.replace("STORE", &dir.path().join("x.db").display().to_string());
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_drbot"))
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .env("TEST_SLACK_SIGNING", "signing-secret-abcdef")
        .env("TEST_SLACK_TOKEN", SECRET)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !all.contains(SECRET) && !all.contains("signing-secret-abcdef"),
        "secret leaked:\n{all}"
    );
    (out.status.code().unwrap_or(-1), all)
}

fn expect_problem(text: &str, needle: &str) {
    let (code, out) = check(text);
    assert_eq!(code, 1, "check-config must fail for {needle:?}:\n{out}");
    assert!(out.contains(needle), "expected {needle:?} in:\n{out}");
}

#[test]
fn the_good_config_passes() {
    let (code, out) = check(GOOD);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK"), "{out}");
}

#[test]
fn each_mistake_has_its_own_message() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[store]",
            "[sever]\nlisten = \"x\"\n[store]",
            "sever: unknown key",
        ),
        (
            "[store]",
            "[server]\nlisen = \"127.0.0.1:1\"\n[store]",
            "server.lisen: unknown field `lisen`, expected one of `listen`",
        ),
        (
            "[store]",
            "[server]\nlisten = \"localhost\"\n[store]",
            "server.listen: `localhost` is not an address",
        ),
        (
            "[store]",
            "[approvals]\nrequired = \"two\"\n[store]",
            "approvals.required: invalid type: a string, expected u32",
        ),
        (
            "[store]",
            "[approvals]\nrequired = 0\n[store]",
            "approvals.required: must be at least 1",
        ),
        (
            "[store]",
            "[approvals]\nexpires_after = \"soon\"\n[store]",
            "approvals.expires_after: `soon` is not a duration",
        ),
        (
            "[store]",
            "[approvals]\nexpires_after = \"500000000 years\"\n[store]",
            "approvals.expires_after: must be at most 100 years",
        ),
        (
            "url = \"sqlite://STORE\"",
            "url = \"mysql://x\"",
            "store.url: must start with",
        ),
        (
            "${TEST_SLACK_TOKEN}",
            "${NOT_SET_ANYWHERE}",
            "slack.bot_token: environment variable NOT_SET_ANYWHERE is not set",
        ),
        (
            "approve_roles = [\"sre-lead\"]",
            "approve_roles = [\"sre-laed\"]",
            "runbooks[0].approve_roles: no person has role `sre-laed`",
        ),
        (
            "type = \"exec\"",
            "type = \"exce\"",
            "runbooks[0].steps[0].type: unknown step type `exce`",
        ),
        (
            "command = \"true\"",
            "comand = \"true\"",
            "runbooks[0].steps[0].with.comand: unknown field `comand`, expected one of `command`",
        ),
        (
            "args = [\"{region}\"]",
            "args = [\"{regoin}\"]",
            "uses `{regoin}`, which is not set",
        ),
        (
            "role = \"secondary\"",
            "role = \"backup\"",
            "regions.us-west-2.role: `backup` is not `primary` or `secondary`",
        ),
        (
            "slack = \"UALICE\"",
            "slack = \"UALICE\"\n[[people]]\nname = \"eve\"\nroles = [\"oncall\"]\nslack = \"UALICE\"",
            "account `UALICE` already belongs to `alice`",
        ),
        (
            "command = \"failover\"",
            "command = \"failovr\"",
            "runbooks[0].command: unknown command `failovr`",
        ),
        (
            "name = \"bob\"",
            "name = \"alice\"",
            "`alice` is listed twice",
        ),
        (
            "[[runbooks]]",
            "[[runbooks]]\nname = \"x\"\n[[runbooks]]",
            "runbooks[0]: missing field",
        ),
        (
            "incident_channel = \"C123\"",
            "incident_channel = \"C123\"\nmode = \"socket\"",
            "slack.app_token: Socket Mode needs the app-level token",
        ),
        (
            "incident_channel = \"C123\"",
            "incident_channel = \"C123\"\napi_base_url = \"slack.com\"",
            "slack.api_base_url: `slack.com` is not an http(s) URL",
        ),
        (
            "[store]",
            "[server]\npublic_url = \"https://status example.com\"\n[store]",
            "server.public_url: `https://status example.com` is not a valid URL",
        ),
        (
            "[store]",
            "[server]\npublic_url = \"https://status.example.com/?a=b\"\n[store]",
            "server.public_url: `https://status.example.com/?a=b` must have no `?query`",
        ),
        (
            "[store]",
            "[server]\npublic_url = \"https://s.example.com\"\n[email]\nsmtp_url = \"smtp://127.0.0.1:25\"\n\
             from = \"status@s.example.com\"\nrate_limit = 1e-20\n[store]",
            "email.rate_limit: 0.00000000000000000001 is out of range",
        ),
        (
            "[store]",
            "[server]\npublic_url = \"https://s.example.com\"\n[email]\nsmtp_url = \"smtp://127.0.0.1:25\"\n\
             from = \"status@bücher.example\"\n[store]",
            "email.from: the domain `bücher.example` must be a plain ASCII domain name",
        ),
    ];
    for (from, to, needle) in cases {
        assert!(GOOD.contains(from), "bad test case: {from}");
        expect_problem(&GOOD.replacen(from, to, 1), needle);
    }
}

#[test]
fn approvers_must_be_able_to_reach_quorum() {
    let text = GOOD.replace(
        "[[people]]\nname = \"bob\"",
        "[approvals]\nrequired = 2\n\n[[people]]\nname = \"bob\"",
    );
    expect_problem(
        &text,
        "2 approval(s) are required but only 1 person(s) hold these roles",
    );
}

/// The requester never approves their own request: a requester who is the only approver
/// would leave nobody to approve. Allowed (others may request), but said.
#[test]
fn a_requester_who_is_the_only_approver_is_warned_about() {
    let text = GOOD.replace(
        "name = \"alice\"\nroles = [\"sre-lead\"]",
        "name = \"alice\"\nroles = [\"sre-lead\", \"oncall\"]",
    );
    assert_ne!(text, GOOD);
    let (code, out) = check(&text);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "warning: runbooks[0] (failover): a request by alice cannot reach its 1 approval(s): \
             nobody else holds sre-lead"
        ),
        "{out}"
    );
    let (code, out) = check(GOOD);
    assert_eq!(code, 0);
    assert!(!out.contains("warning"), "{out}");
}

/// A Redis URL or a kubeconfig context that a step could only reject mid-failover (after the
/// primary was fenced) is named by check-config instead.
#[test]
fn redis_urls_and_kube_contexts_are_checked_before_any_run() {
    expect_problem(
        &GOOD.replace(
            "[store]",
            "[redis.us-west-2]\nurl = \"dr-redis:6379\"\n\n[store]",
        ),
        "redis.us-west-2.url: not a usable redis:// or rediss:// URL",
    );
    let (code, out) = check(&GOOD.replace(
        "[store]",
        "[redis.us-west-2]\nurl = \"redis://:pw-4f9a2c@dr-redis:6379/0\"\n\n[store]",
    ));
    assert_eq!(code, 0, "{out}");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\ncurrent-context: primary-cluster\nclusters:\n- name: c\n  \
         cluster:\n    server: https://127.0.0.1:6443\ncontexts:\n- name: primary-cluster\n  \
         context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user:\n    token: t\n",
    )
    .unwrap();
    let kube = |context: &str| {
        GOOD.replace(
            "[store]",
            &format!(
                "[kubernetes.us-west-2]\nkubeconfig = \"{}\"\ncontext = \"{context}\"\n\n[store]",
                kubeconfig.display()
            ),
        )
    };
    expect_problem(
        &kube("dr-cluster"),
        "has no context `dr-cluster` (it has: primary-cluster)",
    );
    let (code, out) = check(&kube("primary-cluster"));
    assert_eq!(code, 0, "{out}");
    expect_problem(
        &GOOD.replace(
            "[store]",
            "[kubernetes.us-west-2]\nkubeconfig = \"/nonexistent/kubeconfig\"\n\n[store]",
        ),
        "kubernetes.us-west-2: kubeconfig /nonexistent/kubeconfig:",
    );
}

/// An empty Discord bot token (a variable set but empty) would make every post a 401.
#[test]
fn an_empty_discord_bot_token_is_named() {
    expect_problem(
        &GOOD.replace(
            "[store]",
            "[discord]\npublic_key = \"ab\"\nbot_token = \"\"\napplication_id = \"1\"\n\
             incident_channel = \"2\"\n\n[store]",
        ),
        "discord.bot_token: must not be empty",
    );
}

/// 64 hex digits that are no Ed25519 key (not a curve point, or a small-order one) would
/// have every interaction refused, and Discord switched off: named at check-config.
#[test]
fn a_public_key_that_is_no_ed25519_key_is_named() {
    for key in ["02".repeat(32), "00".repeat(32)] {
        expect_problem(
            &GOOD.replace(
                "[store]",
                &format!(
                    "[discord]\npublic_key = \"{key}\"\nbot_token = \"t\"\napplication_id = \"1\"\n\
                     incident_channel = \"2\"\n\n[store]"
                ),
            ),
            "discord.public_key: not a valid Ed25519 public key",
        );
    }
}

/// Slack signs HTTP requests only: the signing secret is required in HTTP mode, not in
/// Socket Mode.
#[test]
fn the_signing_secret_is_required_for_http_only() {
    let without = GOOD.replace("signing_secret = \"${TEST_SLACK_SIGNING}\"\n", "");
    assert_ne!(without, GOOD);
    expect_problem(
        &without,
        "slack.signing_secret: required with mode = \"http\"",
    );
    let socket = without.replace(
        "incident_channel = \"C123\"",
        "incident_channel = \"C123\"\nmode = \"socket\"\napp_token = \"xapp-1-A-1-abc\"",
    );
    let (code, out) = check(&socket);
    assert_eq!(code, 0, "{out}");
}

/// A runbook from `runbooks_dir` is named by its file, not by its place in a list the user
/// never wrote.
#[test]
fn a_runbook_file_problem_names_the_file() {
    let books = tempfile::tempdir().unwrap();
    std::fs::write(
        books.path().join("verify.toml"),
        "name = \"verify\"\ncommand = \"verify-backup\"\nrequest_roles = [\"nobody\"]\n\
         approve_roles = [\"sre-lead\"]\n[[steps]]\nname = \"x\"\ntype = \"exec\"\n\
         with = { command = \"true\" }\n",
    )
    .unwrap();
    expect_problem(
        &format!("runbooks_dir = \"{}\"\n{GOOD}", books.path().display()),
        "runbooks_dir/verify.toml.request_roles: no person has role `nobody`",
    );
}

/// A password in a region's URL would be stored with every plan that uses it: warned about,
/// without showing it.
#[test]
fn a_password_in_a_region_url_is_warned_about() {
    let text = GOOD.replace(
        "[regions.us-west-2]\nrole = \"secondary\"",
        "[regions.us-west-2]\nrole = \"secondary\"\nhealth_url = \"https://probe:pw-4242@api.example.com/health\"",
    );
    assert_ne!(text, GOOD);
    let (code, out) = check(&text);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("regions.us-west-2.health_url: holds a password"),
        "{out}"
    );
    assert!(!out.contains("pw-4242"), "{out}");
}

/// A second secondary region would make `{secondary}` (the drill's DR region, the monitor's
/// failover target) a guess: a staging region sorted first would have the drill promote and
/// switch DNS to staging.
#[test]
fn only_one_secondary_region() {
    expect_problem(
        &GOOD.replace(
            "[regions.us-west-2]",
            "[regions.staging]\nrole = \"secondary\"\n\n[regions.us-west-2]",
        ),
        "only one region can have role = \"secondary\" (the DR region), not staging, us-west-2",
    );
}

#[test]
fn every_problem_is_listed_at_once() {
    let text = GOOD
        .replace("role = \"secondary\"", "role = \"backup\"")
        .replace("type = \"exec\"", "type = \"exce\"")
        .replace("[store]", "[sever]\n[store]")
        .replace("${TEST_SLACK_TOKEN}", "${NOT_SET_ANYWHERE}");
    let (code, out) = check(&text);
    assert_eq!(code, 1);
    for needle in [
        "regions.us-west-2.role",
        "unknown step type `exce`",
        "sever: unknown key",
        "NOT_SET_ANYWHERE",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    assert!(out.contains("4 problems"), "{out}");
    assert_eq!(
        out.matches("exce").count(),
        1,
        "no follow-on duplicates:\n{out}"
    );
}

/// Several bad keys in one section are all named at once (serde alone stops at the first), and
/// a required key of the wrong type is not named again as missing.
#[test]
fn every_bad_key_of_a_section_is_named() {
    let text = GOOD.replace(
        "incident_channel = \"C123\"",
        "incident_channel = 5\nmode = true\nchanel = \"C1\"",
    );
    let (code, out) = check(&text);
    assert_eq!(code, 1, "{out}");
    for needle in [
        "slack.incident_channel: invalid type: an integer",
        "slack.mode: invalid type: a boolean",
        "slack.chanel: unknown field `chanel`",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    assert!(out.contains("3 problems"), "{out}");
    assert!(!out.contains("missing field"), "{out}");
}

#[test]
fn secrets_stay_out_of_errors() {
    // A secret written where a number belongs, and a literal secret on a line that breaks TOML.
    let text = GOOD.replace("required", "x").replacen(
        "[store]",
        &format!("[approvals]\nrequired = \"{SECRET}\"\n[store]"),
        1,
    );
    let (code, out) = check(&text);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("approvals.required: invalid type: a string"),
        "{out}"
    );
    let broken = GOOD.replace(
        "incident_channel = \"C123\"",
        &format!("incident_channel = \"C123\"\nbot_token = \"{SECRET}"),
    );
    let (code, out) = check(&broken);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not valid TOML"), "{out}");
    // A secret that is all digits, written without quotes where a string belongs.
    let numeric = GOOD.replace(
        "signing_secret = \"${TEST_SLACK_SIGNING}\"",
        "signing_secret = 98765432123456789",
    );
    let (code, out) = check(&numeric);
    assert_eq!(code, 1, "{out}");
    assert!(!out.contains("98765432123456789"), "{out}");
    assert!(out.contains("invalid type: an integer"), "{out}");
}

#[test]
fn a_missing_variable_gives_one_problem() {
    let (code, out) = check(&GOOD.replace("sqlite://STORE", "${NO_SUCH_DB_URL}"));
    assert_eq!(code, 1);
    assert!(
        out.contains("store.url: environment variable NO_SUCH_DB_URL is not set"),
        "{out}"
    );
    assert!(
        out.contains("1 problem:"),
        "no follow-on problem for the same key:\n{out}"
    );
}

#[test]
fn a_missing_file_is_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_drbot"))
        .args(["--config", "/nonexistent/drbot.toml", "check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot read config file /nonexistent/drbot.toml")
    );
}
