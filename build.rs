//! `sqlx::migrate!` embeds `migrations/` when the crate compiles, but Cargo cannot see that the
//! macro reads those files: without this, a new or changed migration leaves the built binary
//! with the old set until some Rust file changes.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
