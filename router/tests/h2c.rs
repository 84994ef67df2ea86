//! gRPC-shaped traffic: an HTTP/2 client, an h2c-only instance, trailers end to end.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use slipway_router::RouterConfig;
use support::*;
use tokio::net::{TcpListener, TcpStream};

/// An HTTP/2-only (prior knowledge) backend answering with a body and a `grpc-status`
/// trailer, and echoing what it saw in headers.
async fn h2c_backend() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let seen = format!(
                        "{:?} {} te={:?}",
                        req.version(),
                        req.uri(),
                        req.headers().get("te")
                    );
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|c| c.to_bytes())
                        .unwrap_or_default();
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    trailers.insert("grpc-message", "fine".parse().unwrap());
                    let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
                        Ok(Frame::data(Bytes::from(format!(
                            "{seen}|{}",
                            String::from_utf8_lossy(&body)
                        )))),
                        Ok(Frame::trailers(trailers)),
                    ];
                    let mut resp =
                        Response::new(StreamBody::new(futures_util::stream::iter(frames)));
                    resp.headers_mut()
                        .insert("content-type", "application/grpc".parse().unwrap());
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn h2c_instance_gets_http2_and_trailers_reach_an_h2_client() {
    let b = h2c_backend().await;
    let t = start_router(RouterConfig::default()).await;
    let mut r = route("grpc", vec![instance("a", b)]);
    r.http2 = true;
    t.router.upsert_service(r);

    let stream = TcpStream::connect(t.addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let run = async {
        for i in 0..3 {
            let req = Request::post("http://grpc.slipway.localhost/pkg.Svc/Call")
                .version(Version::HTTP_2)
                .header("te", "trailers")
                .header("content-type", "application/grpc")
                .body(full(format!("payload {i}")))
                .unwrap();
            let resp = tx.send_request(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let collected = resp.into_body().collect().await.unwrap();
            let trailers = collected
                .trailers()
                .cloned()
                .expect("trailers passed through");
            assert_eq!(trailers["grpc-status"], "0");
            assert_eq!(trailers["grpc-message"], "fine");
            let text = String::from_utf8(collected.to_bytes().to_vec()).unwrap();
            assert!(
                text.starts_with(
                    "HTTP/2.0 http://grpc.slipway.localhost/pkg.Svc/Call te=Some(\"trailers\")"
                ),
                "{text}"
            );
            assert!(text.ends_with(&format!("|payload {i}")), "{text}");
        }
    };
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("h2c exchange timed out");
}

#[tokio::test]
async fn http2_client_to_http1_instance() {
    let b = ok_backend().await;
    let t = start_router(RouterConfig::default()).await;
    t.router
        .upsert_service(route("web", vec![instance("a", b)]));
    let stream = TcpStream::connect(t.addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("http://web.slipway.localhost/")
        .version(Version::HTTP_2)
        .body(empty())
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
}
