//! The OpenAPI document is served and in step with the router: every API route and
//! method in `console/src/lib.rs` is in it, with its path parameters.

use std::collections::BTreeSet;

use serde_json::Value;

/// `(method, path)` of every `.route(..)` in the console's source, with axum's
/// `{name}` paths as OpenAPI writes them.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let src = include_str!("../src/lib.rs");
    let mut out = BTreeSet::new();
    let mut rest = src;
    while let Some(i) = rest.find(".route(") {
        rest = &rest[i + ".route(".len()..];
        let Some(start) = rest.find('"') else { break };
        let after = &rest[start + 1..];
        let Some(end) = after.find('"') else { break };
        let path = after[..end].to_string();
        // The handler expression runs to the `)` that closes `.route(`.
        let mut depth = 1;
        let mut expr_end = 0;
        for (j, c) in rest.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        expr_end = j;
                        break;
                    }
                }
                _ => {}
            }
        }
        let expr = &rest[..expr_end];
        for m in ["get", "post", "put", "patch", "delete"] {
            let found = expr.match_indices(&format!("{m}(")).any(|(k, _)| {
                k == 0
                    || !expr.as_bytes()[k - 1].is_ascii_alphanumeric()
                        && expr.as_bytes()[k - 1] != b'_'
            });
            if found {
                out.insert((m.to_string(), path.clone()));
            }
        }
    }
    out
}

/// Not part of the HTTP API: the console's page and assets, the git protocol, the
/// health check, and the document itself.
fn outside_the_api(path: &str) -> bool {
    path == "/"
        || path.starts_with("/console/")
        || path.starts_with("/git/")
        || path == "/healthz"
        || path == "/v1/openapi.json"
}

#[test]
fn every_route_is_documented() {
    let doc =
        serde_json::to_value(<slipway_console::ApiDoc as utoipa::OpenApi>::openapi()).unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let routes = routes_in_source();
    assert!(
        routes.len() > 25,
        "the scan found too few routes: {routes:?}"
    );
    let mut missing = Vec::new();
    for (method, path) in &routes {
        if outside_the_api(path) {
            continue;
        }
        let op = &doc["paths"][path][method];
        if !op.is_object() {
            missing.push(format!("{} {path}", method.to_uppercase()));
            continue;
        }
        // Its path parameters are declared.
        for seg in path.split('/').filter(|s| s.starts_with('{')) {
            let name = seg.trim_matches(|c| c == '{' || c == '}');
            let declared = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p: &Value| p["name"] == name && p["in"] == "path");
            assert!(
                declared,
                "{method} {path}: path parameter {name} undeclared"
            );
        }
        assert!(op["responses"].is_object(), "{method} {path}: no responses");
        // Every JSON success answer of the API is a named schema (or a list of one),
        // generated from the handler's type, not a bare object. The webhook's answer
        // depends on the payload and stays an object.
        if path.starts_with("/v1/") {
            for (code, r) in op["responses"].as_object().unwrap() {
                let schema = &r["content"]["application/json"]["schema"];
                if !code.starts_with('2') || schema.is_null() {
                    continue;
                }
                let named = schema["$ref"].is_string() || schema["items"]["$ref"].is_string();
                assert!(named, "{method} {path} {code}: an untyped answer: {schema}");
            }
        }
    }
    assert!(
        missing.is_empty(),
        "routes missing from /v1/openapi.json: {missing:?}"
    );
    // And nothing documented that the router does not serve.
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            assert!(
                routes.contains(&(method.clone(), path.clone())),
                "documented but not routed: {method} {path}"
            );
        }
    }
    // The spec's schema comes from the types.
    let spec = &doc["components"]["schemas"]["ServiceSpec"];
    assert!(spec["properties"]["scaling"].is_object(), "{spec}");
}

/// The query parameters of the events, logs and metrics routes come from the handlers'
/// query types (`IntoParams`), none required.
#[test]
fn query_parameters_come_from_the_query_types() {
    let doc: serde_json::Value =
        serde_json::to_value(<slipway_console::ApiDoc as utoipa::OpenApi>::openapi()).unwrap();
    for (path, want) in [
        (
            "/v1/services/{name}/events",
            vec!["after", "limit", "deployment"],
        ),
        (
            "/v1/services/{name}/logs",
            vec!["after", "since", "until", "q", "instance", "limit"],
        ),
        (
            "/v1/services/{name}/logs/stream",
            vec!["after", "since", "until", "q", "instance", "limit"],
        ),
        ("/v1/services/{name}/metrics", vec!["period"]),
    ] {
        let params = doc["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{path} has no parameters"));
        let query: Vec<&serde_json::Value> = params.iter().filter(|p| p["in"] == "query").collect();
        let names: Vec<&str> = query.iter().filter_map(|p| p["name"].as_str()).collect();
        assert_eq!(names, want, "{path}");
        for p in query {
            assert_ne!(p["required"], true, "{path}: {p}");
            assert!(
                p["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{path}: {p}"
            );
        }
    }
}
