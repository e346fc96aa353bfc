//! `Secret` lives in the recovery library (steps hold password-bearing URLs too); re-exported
//! here for the config model.

pub use recovery::secret::Secret;
