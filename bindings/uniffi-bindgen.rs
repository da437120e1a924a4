//! `uniffi-bindgen`, built from the workspace so its version always matches
//! the UniFFI the library was built with. Generate the Kotlin, Swift and
//! Python bindings in library mode with `scripts/bindings.sh`.

fn main() {
    uniffi::uniffi_bindgen_main();
}
