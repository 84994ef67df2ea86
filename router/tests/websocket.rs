//! A WebSocket echo through the router: 1,000 messages, in order.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use slipway_router::RouterConfig;
use support::*;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

async fn ws_echo_backend() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_close() {
                        break;
                    }
                    if ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// A WebSocket to the `chat` service through the router, once it answered 101.
async fn open_chat(router: std::net::SocketAddr) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let stream = TcpStream::connect(router).await.unwrap();
    let req = "ws://chat.slipway.localhost/socket"
        .into_client_request()
        .unwrap();
    let (ws, resp) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    assert_eq!(resp.status(), 101);
    ws
}

#[tokio::test]
async fn websocket_echoes_a_thousand_messages() {
    let b = ws_echo_backend().await;
    let t = start_router(RouterConfig::default()).await;
    t.router
        .upsert_service(route("chat", vec![instance("a", b)]));

    let mut ws = open_chat(t.addr).await;

    let run = async {
        for i in 0..1000u32 {
            let text = format!("message {i}");
            ws.send(Message::text(text.clone())).await.unwrap();
            let echoed = ws.next().await.expect("stream ended").expect("ws error");
            assert_eq!(echoed, Message::text(text));
        }
        ws.close(None).await.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("echo took over 60 s");
    drop(ws);
    let router = t.router.clone();
    assert!(wait_for(Duration::from_secs(5), || router.stats()[0].in_flight == 0).await);
}

/// A tunnel is load: at shutdown the router waits for it (within its drain deadline) as it
/// waits for requests in flight, and ends once it closes.
#[tokio::test]
async fn shutdown_waits_for_an_open_websocket() {
    let b = ws_echo_backend().await;
    let mut t = start_router(RouterConfig::default()).await;
    t.router
        .upsert_service(route("chat", vec![instance("a", b)]));
    let mut ws = open_chat(t.addr).await;
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("before"));

    t.shutdown.cancel();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut t.task)
            .await
            .is_err(),
        "the router stopped serving with a tunnel open"
    );
    // The tunnel still carries messages while the router drains.
    ws.send(Message::text("during")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("during"));
    ws.close(None).await.unwrap();
    drop(ws);
    let ended = tokio::time::timeout(Duration::from_secs(10), &mut t.task).await;
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "the router ends once the tunnel closes: {ended:?}"
    );
}
