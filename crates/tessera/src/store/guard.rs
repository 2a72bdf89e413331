//! The guarded writes to users that every backend implements the same way
//! (see [`super::UserWrite::LastHolder`]): what each one does to the row,
//! and whether it takes a role away from an active holder.

use time::OffsetDateTime;

use crate::core::accounts::{User, UserStatus};

/// One guarded write to a user.
pub(crate) enum Write<'a> {
    Roles(&'a [String], OffsetDateTime),
    Status(UserStatus, OffsetDateTime),
    Delete,
}

impl Write<'_> {
    /// Whether this write, on `user` as it is now, takes `role` away from
    /// an active holder of it (then the backend must find another one).
    pub(crate) fn takes_away(&self, user: &User, role: &str) -> bool {
        let holds = user.status == UserStatus::Active && user.has_role(role);
        let holds_after = match self {
            Write::Roles(roles, _) => {
                user.status == UserStatus::Active && roles.iter().any(|r| r == role)
            }
            Write::Status(status, _) => *status == UserStatus::Active && user.has_role(role),
            Write::Delete => false,
        };
        holds && !holds_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_writes_that_end_an_active_holding_take_the_role_away() {
        let at = OffsetDateTime::UNIX_EPOCH;
        let mut admin = User {
            id: "usr_a".into(),
            email: "a@example.com".into(),
            roles: vec!["admin".into(), "ops".into()],
            status: UserStatus::Active,
            email_verified: false,
            created_at: at,
        };
        let ops = ["ops".to_owned()];
        let both = ["ops".to_owned(), "admin".to_owned()];
        assert!(Write::Roles(&ops, at).takes_away(&admin, "admin"));
        assert!(!Write::Roles(&both, at).takes_away(&admin, "admin"));
        assert!(Write::Status(UserStatus::Suspended, at).takes_away(&admin, "admin"));
        assert!(!Write::Status(UserStatus::Active, at).takes_away(&admin, "admin"));
        assert!(Write::Delete.takes_away(&admin, "admin"));
        assert!(!Write::Delete.takes_away(&admin, "billing"));
        // A suspended admin holds nothing that counts.
        admin.status = UserStatus::Suspended;
        assert!(!Write::Delete.takes_away(&admin, "admin"));
        assert!(!Write::Roles(&ops, at).takes_away(&admin, "admin"));
    }
}
