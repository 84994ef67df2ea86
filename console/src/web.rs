//! The web console's server side: the page and its assets (served by Slipway itself, no
//! CDN), sign-in with the admin token into a session cookie (HttpOnly, SameSite=Strict,
//! Secure over HTTPS), and CSRF protection for every state-changing request a session
//! makes: a per-session token in `X-CSRF-Token`, and an `Origin` that must be this host.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

/// The page.
const INDEX: &str = include_str!("../web/index.html");
/// Its script.
const APP_JS: &str = include_str!("../web/app.js");
/// Its style.
const APP_CSS: &str = include_str!("../web/app.css");

/// The session cookie's name.
pub const COOKIE: &str = "slipway_session";
/// How long a session lasts without use.
const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most (the oldest go first).
const SESSIONS_MAX: usize = 1000;

struct Session {
    csrf: String,
    used: Instant,
}

/// Signed-in browsers.
#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<String, Session>>>,
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("the OS's random source");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// Whether a request came over HTTPS (directly, or through the router, which sets
/// `X-Forwarded-Proto` itself and never passes a client's).
fn over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// Whether the request's `Origin` (or, without one, `Referer`) is the host it was sent
/// to. A browser always sends `Origin` on a cross-site POST; a missing one (curl, old
/// browsers on same-origin requests) passes, since the CSRF token is checked as well.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST))
        .and_then(|v| v.to_str().ok())
        .map(|h| h.to_ascii_lowercase());
    let from = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    match (from, host) {
        (None, _) => true,
        (Some("null"), _) => false,
        (Some(o), Some(h)) => {
            let rest = o.split_once("://").map_or(o, |(_, r)| r);
            let authority = rest.split('/').next().unwrap_or(rest).to_ascii_lowercase();
            authority == h
        }
        (Some(_), None) => false,
    }
}

/// What a request's session allows.
pub enum SessionAuth {
    /// No session cookie (or an unknown or expired one).
    None,
    /// A valid session; for a state-changing method, the CSRF checks passed.
    Ok,
    /// A valid session, but the request failed the CSRF checks.
    Forgery,
}

impl Sessions {
    fn create(&self) -> (String, String) {
        let id = random_hex(32);
        let csrf = random_hex(32);
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, s| s.used.elapsed() < SESSION_IDLE);
        if m.len() >= SESSIONS_MAX {
            if let Some(oldest) = m.iter().min_by_key(|(_, s)| s.used).map(|(k, _)| k.clone()) {
                m.remove(&oldest);
            }
        }
        m.insert(
            id.clone(),
            Session {
                csrf: csrf.clone(),
                used: Instant::now(),
            },
        );
        (id, csrf)
    }

    fn csrf_of(&self, id: &str) -> Option<String> {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let s = m.get_mut(id)?;
        if s.used.elapsed() >= SESSION_IDLE {
            m.remove(id);
            return None;
        }
        s.used = Instant::now();
        Some(s.csrf.clone())
    }

    fn end(&self, id: &str) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Checks a request's session: a GET or HEAD needs only the cookie; anything else
    /// also needs its session's token in `X-CSRF-Token` and a same-origin `Origin`.
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> SessionAuth {
        let Some(id) = cookie(headers, COOKIE) else {
            return SessionAuth::None;
        };
        let Some(csrf) = self.csrf_of(id) else {
            return SessionAuth::None;
        };
        if method == Method::GET || method == Method::HEAD {
            return SessionAuth::Ok;
        }
        let given = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if crate::constant_time_eq(given.as_bytes(), csrf.as_bytes()) && same_origin(headers) {
            SessionAuth::Ok
        } else {
            SessionAuth::Forgery
        }
    }
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`: the console.
pub async fn index() -> Response {
    let mut r = asset("text/html; charset=utf-8", INDEX);
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    r.headers_mut()
        .insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

/// `GET /console/app.js`.
pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /console/app.css`.
pub async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

fn set_cookie(value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("a cookie of hex digits is a header value")
}

/// `POST /console/login` with `{"token": "..."}`: a session cookie and its CSRF token.
pub async fn login(
    State((token, sessions)): State<(Arc<str>, Sessions)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fail = |s: StatusCode, m: &str| crate::ApiError(s, m.to_string(), None).into_response();
    if !same_origin(&headers) {
        return fail(
            StatusCode::FORBIDDEN,
            "sign-in from another site is refused",
        );
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Login {
        token: String,
    }
    let Ok(req) = serde_json::from_slice::<Login>(&body) else {
        return fail(StatusCode::BAD_REQUEST, "send {\"token\": \"...\"}");
    };
    if !crate::constant_time_eq(req.token.trim().as_bytes(), token.as_bytes()) {
        return fail(
            StatusCode::UNAUTHORIZED,
            "wrong token: it is in the `token` file of slipway serve's data directory",
        );
    }
    let (id, csrf) = sessions.create();
    let mut r = axum::Json(serde_json::json!({ "csrf": csrf })).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&id, SESSION_IDLE.as_secs(), over_https(&headers)),
    );
    r
}

/// `GET /console/session`: the session's CSRF token (401 when signed out).
pub async fn session(State(sessions): State<Sessions>, headers: HeaderMap) -> Response {
    match cookie(&headers, COOKIE).and_then(|id| sessions.csrf_of(id)) {
        Some(csrf) => axum::Json(serde_json::json!({ "csrf": csrf })).into_response(),
        None => {
            crate::ApiError(StatusCode::UNAUTHORIZED, "signed out".into(), None).into_response()
        }
    }
}

/// `POST /console/logout` (CSRF-checked): ends the session and clears the cookie.
pub async fn logout(State(sessions): State<Sessions>, headers: HeaderMap) -> Response {
    match sessions.check(&Method::POST, &headers) {
        SessionAuth::Ok => {}
        SessionAuth::None => {
            return crate::ApiError(StatusCode::UNAUTHORIZED, "signed out".into(), None)
                .into_response()
        }
        SessionAuth::Forgery => {
            return crate::ApiError(
                StatusCode::FORBIDDEN,
                "cross-site request refused (CSRF)".into(),
                None,
            )
            .into_response()
        }
    }
    if let Some(id) = cookie(&headers, COOKIE) {
        sessions.end(id);
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, set_cookie("", 0, over_https(&headers)));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn origins() {
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:7070"),
            ("origin", "http://127.0.0.1:7070")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:7070"),
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:7070"),
            ("origin", "null")
        ])));
        assert!(
            same_origin(&headers(&[("host", "a:1")])),
            "no Origin: the token decides"
        );
        assert!(same_origin(&headers(&[
            ("host", "a:1"),
            ("referer", "http://a:1/x")
        ])));
    }

    #[test]
    fn sessions_need_the_csrf_token_for_changes() {
        let s = Sessions::default();
        let (id, csrf) = s.create();
        let c = format!("{COOKIE}={id}");
        assert!(matches!(
            s.check(&Method::GET, &headers(&[("cookie", &c)])),
            SessionAuth::Ok
        ));
        assert!(matches!(
            s.check(&Method::POST, &headers(&[("cookie", &c)])),
            SessionAuth::Forgery
        ));
        let good = headers(&[
            ("cookie", &c),
            ("x-csrf-token", &csrf),
            ("host", "h"),
            ("origin", "http://h"),
        ]);
        assert!(matches!(s.check(&Method::POST, &good), SessionAuth::Ok));
        let cross = headers(&[
            ("cookie", &c),
            ("x-csrf-token", &csrf),
            ("host", "h"),
            ("origin", "http://evil"),
        ]);
        assert!(matches!(
            s.check(&Method::DELETE, &cross),
            SessionAuth::Forgery
        ));
        s.end(&id);
        assert!(matches!(
            s.check(&Method::GET, &headers(&[("cookie", &c)])),
            SessionAuth::None
        ));
    }

    proptest! {
        #[test]
        fn any_cookie_header(v in "[ -~]{0,80}") {
            let h = headers(&[("cookie", &v)]);
            let _ = cookie(&h, COOKIE);
            let _ = Sessions::default().check(&Method::POST, &h);
        }
    }
}
