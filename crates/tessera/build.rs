//! Rebuilds the crate when a migration is added or changed: `sqlx::migrate!`
//! embeds the files of `migrations/` at compile time, and cargo does not
//! know it reads them (a new migration file would otherwise be missing from
//! a binary built incrementally).

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
