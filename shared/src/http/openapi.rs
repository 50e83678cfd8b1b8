//! The OpenAPI document of both APIs.
//!
//! Each API describes its own routes where they are defined (a
//! `#[utoipa::path]` on every handler, and `utoipa_axum` builds the router
//! and its description from the same list, so no route can go undescribed).
//! [`assemble`] joins the two descriptions into one document and applies the
//! conventions every operation shares ([`Conventions`]). The assembled
//! document is kept in `docs/openapi.json`, which both services serve at
//! `/openapi.json`; a test fails when it differs from what the code
//! describes (`./dev openapi` writes it anew).

use axum::response::IntoResponse;
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, Header, InfoBuilder, OpenApi, Ref, RefOr, Response, ResponseBuilder, Server,
};
use utoipa::ToSchema;

use super::problem::Problem;
use super::PROBLEM_JSON;

/// The assembled document, as served.
pub const DOCUMENT: &str = include_str!("../../../docs/openapi.json");

/// The security scheme every `/v1` route but the webhooks requires.
pub const BEARER: &str = "bearer";

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "service",
    responses((status = 200, description = "The OpenAPI document of both APIs", body = Object))
)]
pub async fn document() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], DOCUMENT)
}

/// One API's description and where that API is served by default.
pub struct Part {
    pub doc: OpenApi,
    pub server: &'static str,
    pub description: &'static str,
}

/// The one document of both APIs: their paths (each path naming the server
/// that answers it, since the APIs are separate services), their schemas,
/// and the shared conventions.
pub fn assemble(parts: Vec<Part>) -> OpenApi {
    let mut doc = OpenApi::new(
        InfoBuilder::new()
            .title("Tally")
            .version(env!("CARGO_PKG_VERSION"))
            .description(Some(
                "Real-time engagement analytics. The command API takes events in; \
                 the query API answers reports. Every error is RFC 9457 \
                 `application/problem+json`.",
            ))
            .build(),
        utoipa::openapi::Paths::new(),
    );
    let mut servers = Vec::new();
    for mut part in parts {
        let server = Server::builder()
            .url(part.server)
            .description(Some(part.description))
            .build();
        for (path, item) in part.doc.paths.paths.iter_mut() {
            // Service routes are on every service: they keep the default.
            if !is_service_route(path) {
                item.servers = Some(vec![server.clone()]);
            }
        }
        servers.push(server);
        doc.merge(part.doc);
    }
    doc.servers = Some(servers);
    Conventions.apply(&mut doc);
    doc
}

/// Routes every service has (health, metrics, this document).
fn is_service_route(path: &str) -> bool {
    !path.starts_with("/v1/")
}

/// What every operation shares, added once here rather than on each handler:
/// the bearer scheme; `401`, `403` and `429` on every authenticated
/// operation; `408` everywhere (the request deadline); and the
/// problem+json body on every error response, with `Retry-After` on `429`
/// and `503` and `WWW-Authenticate` on `401`.
pub struct Conventions;

impl Conventions {
    pub fn apply(&self, doc: &mut OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT naming the tenant and the scopes (`events:write`, `reports:read`).",
                    ))
                    .build(),
            ),
        );
        let mut schemas = Vec::new();
        <Problem<'_> as ToSchema>::schemas(&mut schemas);
        components.schemas.extend(schemas);
        components.schemas.insert(
            <Problem<'_> as ToSchema>::name().into_owned(),
            <Problem<'_> as utoipa::PartialSchema>::schema(),
        );
        for item in doc.paths.paths.values_mut() {
            for operation in operations_mut(item) {
                conventional_responses(operation);
            }
        }
    }
}

/// Every operation of a path item.
pub fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
        &mut item.head,
        &mut item.options,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// Adds `status` with `description` unless the operation documents it.
pub fn ensure_response(operation: &mut Operation, status: u16, description: &str) {
    operation
        .responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| RefOr::T(Response::new(description)));
}

fn conventional_responses(operation: &mut Operation) {
    let authenticated = operation
        .security
        .as_ref()
        .is_some_and(|requirements| !requirements.is_empty());
    if authenticated {
        ensure_response(operation, 401, "No valid bearer token");
        ensure_response(operation, 403, "The token lacks the scope this needs");
        ensure_response(
            operation,
            429,
            "A rate limit is spent; retry after `Retry-After`",
        );
    }
    ensure_response(operation, 408, "The request took longer than allowed");
    for (status, response) in operation.responses.responses.iter_mut() {
        let (RefOr::T(response), Ok(code)) = (response, status.parse::<u16>()) else {
            continue;
        };
        if code < 400 {
            continue;
        }
        let description = std::mem::take(&mut response.description);
        let mut builder = ResponseBuilder::new().description(description).content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        );
        for (name, header) in std::mem::take(&mut response.headers) {
            builder = builder.header(name, header);
        }
        match code {
            401 => {
                builder = builder.header(
                    WWW_AUTHENTICATE.as_str(),
                    string_header("The authentication scheme to use"),
                );
            }
            429 | 503 => {
                builder = builder.header(
                    RETRY_AFTER.as_str(),
                    integer_header("Seconds to wait before retrying"),
                );
            }
            _ => {}
        }
        *response = builder.build();
    }
}

/// A documented response header holding a string.
pub fn string_header(description: &str) -> Header {
    header(utoipa::openapi::Type::String, description)
}

/// A documented response header holding a non-negative integer.
pub fn integer_header(description: &str) -> Header {
    header(utoipa::openapi::Type::Integer, description)
}

fn header(kind: utoipa::openapi::Type, description: &str) -> Header {
    let integer = kind == utoipa::openapi::Type::Integer;
    let mut schema = utoipa::openapi::ObjectBuilder::new().schema_type(kind);
    if integer {
        schema = schema.minimum(Some(0));
    }
    utoipa::openapi::HeaderBuilder::new()
        .schema(schema)
        .description(Some(description))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operation(secured: bool) -> OpenApi {
        let mut op = utoipa::openapi::path::OperationBuilder::new()
            .response("200", Response::new("ok"))
            .response("404", Response::new("no such thing"));
        if secured {
            op = op.security(utoipa::openapi::security::SecurityRequirement::new(
                BEARER,
                Vec::<String>::new(),
            ));
        }
        let mut doc = OpenApi::default();
        doc.paths.paths.insert(
            "/v1/x".into(),
            PathItem::new(utoipa::openapi::HttpMethod::Get, op.build()),
        );
        doc
    }

    fn responses(doc: &OpenApi) -> serde_json::Value {
        serde_json::to_value(doc).unwrap()["paths"]["/v1/x"]["get"]["responses"].clone()
    }

    #[test]
    fn authenticated_operations_document_the_auth_and_rate_problems() {
        let mut doc = operation(true);
        Conventions.apply(&mut doc);
        let responses = responses(&doc);
        for status in ["401", "403", "408", "429", "404"] {
            let problem = &responses[status]["content"][PROBLEM_JSON]["schema"]["$ref"];
            assert_eq!(problem, "#/components/schemas/Problem", "{status}");
        }
        assert!(responses["401"]["headers"]["www-authenticate"].is_object());
        assert!(responses["429"]["headers"]["retry-after"].is_object());
        assert!(
            responses["200"]["content"].is_null(),
            "a success is left alone"
        );
    }

    #[test]
    fn open_operations_get_no_auth_problems() {
        let mut doc = operation(false);
        Conventions.apply(&mut doc);
        let responses = responses(&doc);
        assert!(responses["401"].is_null());
        assert!(responses["408"].is_object());
    }

    #[test]
    fn each_api_path_names_its_server_and_service_routes_name_none() {
        let mut command = operation(true);
        command.paths.paths.insert(
            "/healthz".into(),
            PathItem::new(
                utoipa::openapi::HttpMethod::Get,
                Operation::builder().build(),
            ),
        );
        let doc = assemble(vec![Part {
            doc: command,
            server: "http://localhost:1",
            description: "one",
        }]);
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(
            json["paths"]["/v1/x"]["servers"][0]["url"],
            "http://localhost:1"
        );
        assert!(json["paths"]["/healthz"]["servers"].is_null());
        assert!(json["components"]["schemas"]["Problem"].is_object());
    }
}
