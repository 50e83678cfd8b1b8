//! Prints the OpenAPI document of both APIs: `./dev openapi` writes it to
//! `docs/openapi.json`, which the services serve.

fn main() {
    let doc = tally_tests::openapi_document();
    println!(
        "{}",
        serde_json::to_string_pretty(&doc).expect("the document serialises")
    );
}
