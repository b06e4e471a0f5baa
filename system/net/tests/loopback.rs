//! The server, client, service identity and TLS over real loopback TCP.

use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use pay_core::{Env, SeededEntropy};
use pay_net::identity::{require_caller, CallerPolicy};
use pay_net::{
    serve, CallError, Caller, HttpClient, PeerAddr, ServeOptions, ServiceClient, ServiceDirectory, ServiceKey,
    TcpTransport, TokenIssuer, TokenVerifier, Transport,
};
use std::sync::Arc;
use std::time::Duration;

async fn start(
    app: Router,
    opts: ServeOptions,
) -> (String, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = TcpTransport.bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let h = tokio::spawn(async move {
        serve(listener, app, opts, async move {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (format!("http://{addr}"), tx, h)
}

#[tokio::test]
async fn service_tokens_gate_routes_by_caller() {
    let env = Env::real("test");
    let e = SeededEntropy::new(1, "keys");
    let payments = ServiceKey::generate("payments", &e);
    let api = ServiceKey::generate("api", &e);
    let mut dir = ServiceDirectory::new();
    dir.insert("payments", payments.verifying_key());
    dir.insert("api", api.verifying_key());
    let verifier = Arc::new(TokenVerifier::new(
        "tokenizer",
        dir,
        env.clone(),
        Duration::from_secs(30),
    ));
    let policy = CallerPolicy {
        verifier,
        allowed: &["payments"],
    };
    let app = Router::new()
        .route(
            "/forward",
            post(
                |Extension(c): Extension<Caller>,
                 Extension(p): Extension<PeerAddr>,
                 Json(v): Json<serde_json::Value>| async move {
                    Json(serde_json::json!({"caller": c.0, "echo": v, "loopback": p.0.ip().is_loopback()}))
                },
            ),
        )
        .route_layer(axum::middleware::from_fn_with_state(policy, require_caller))
        .route("/open", get(|| async { Json(serde_json::json!({"ok": true})) }));
    let (base, stop, handle) = start(app, ServeOptions::default()).await;
    let http = HttpClient::new(Arc::new(TcpTransport));

    let as_payments = ServiceClient::new(
        http.clone(),
        "tokenizer",
        &base,
        Some(Arc::new(TokenIssuer::new(
            Arc::new(payments),
            env.clone(),
            Duration::from_secs(60),
        ))),
    );
    let r: serde_json::Value = as_payments
        .post("/forward", &serde_json::json!({"n": 1}))
        .await
        .unwrap();
    assert_eq!(r["caller"], "payments");
    assert_eq!(r["echo"]["n"], 1);
    assert_eq!(r["loopback"], true);

    let as_api = ServiceClient::new(
        http.clone(),
        "tokenizer",
        &base,
        Some(Arc::new(TokenIssuer::new(
            Arc::new(api),
            env.clone(),
            Duration::from_secs(60),
        ))),
    );
    match as_api
        .post::<_, serde_json::Value>("/forward", &serde_json::json!({}))
        .await
    {
        Err(CallError::Api(e)) => assert_eq!(e.status, 403),
        other => panic!("api must be refused, got {other:?}"),
    }
    let anonymous = ServiceClient::new(http.clone(), "tokenizer", &base, None);
    match anonymous
        .post::<_, serde_json::Value>("/forward", &serde_json::json!({}))
        .await
    {
        Err(CallError::Api(e)) => assert_eq!(e.status, 401),
        other => panic!("anonymous must be refused, got {other:?}"),
    }
    let open: serde_json::Value = anonymous.get("/open").await.unwrap();
    assert_eq!(open["ok"], true);

    stop.send(()).unwrap();
    handle.await.unwrap();
    match anonymous.get::<serde_json::Value>("/open").await {
        Err(e) => assert!(!matches!(e, CallError::Api(_))),
        Ok(_) => panic!("server should be down"),
    }
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let app = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "done"
        }),
    );
    let (base, stop, handle) = start(app, ServeOptions::default()).await;
    let http = HttpClient::new(Arc::new(TcpTransport));
    let req = tokio::spawn({
        let http = http.clone();
        let url = format!("{base}/slow");
        async move {
            http.request(
                http::Method::GET,
                &url,
                &[],
                bytes::Bytes::new(),
                Duration::from_secs(5),
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.send(()).unwrap();
    let resp = req.await.unwrap().unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(&resp.body[..], b"done");
    handle.await.unwrap();
}

#[tokio::test]
async fn tls_listener_speaks_tls12_and_13_only() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cfg =
        pay_net::tls::server_config_from_pem(cert.cert.pem().as_bytes(), cert.key_pair.serialize_pem().as_bytes())
            .unwrap();
    let app = Router::new().route("/", get(|| async { "secure" }));
    let (base, stop, handle) = start(
        app,
        ServeOptions {
            tls: Some(cfg),
            ..ServeOptions::default()
        },
    )
    .await;
    let addr = base.trim_start_matches("http://").to_owned();

    let client_cfg = pay_net::tls::client_config_with_roots(cert.cert.pem().as_bytes()).unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_cfg);
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (_, conn) = tls.get_ref();
    assert!(matches!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3) | Some(rustls::ProtocolVersion::TLSv1_2)
    ));

    // A plain-HTTP client cannot talk to the TLS listener.
    let http = HttpClient::new(Arc::new(TcpTransport));
    let plain = http
        .request(
            http::Method::GET,
            &format!("{base}/"),
            &[],
            bytes::Bytes::new(),
            Duration::from_secs(2),
        )
        .await;
    assert!(plain.is_err() || plain.unwrap().status != 200);
    stop.send(()).unwrap();
    handle.await.unwrap();
}

/// A role hosted in the same process is called through its router: the same request the
/// wire would carry (origin-form path, Host, Content-Length, a loopback peer, the service
/// token), no socket (the address does not even resolve), and a caller's timeout does not
/// cancel the handler.
#[tokio::test]
async fn in_process_routes_take_calls_without_a_socket() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let env = Env::real("test");
    let e = SeededEntropy::new(2, "keys");
    let payments = ServiceKey::generate("payments", &e);
    let mut dir = ServiceDirectory::new();
    dir.insert("payments", payments.verifying_key());
    let policy = CallerPolicy {
        verifier: Arc::new(TokenVerifier::new(
            "tokenizer",
            dir,
            env.clone(),
            Duration::from_secs(30),
        )),
        allowed: &["payments"],
    };
    let finished = Arc::new(AtomicBool::new(false));
    let done = finished.clone();
    let app = Router::new()
        .route(
            "/forward",
            post(
                |Extension(c): Extension<Caller>,
                 Extension(p): Extension<PeerAddr>,
                 uri: axum::http::Uri,
                 headers: axum::http::HeaderMap,
                 Json(v): Json<serde_json::Value>| async move {
                    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                    Json(serde_json::json!({
                        "caller": c.0, "echo": v, "loopback": p.0.ip().is_loopback(),
                        "uri": uri.to_string(), "host": h("host"), "length": h("content-length"),
                    }))
                },
            ),
        )
        .route_layer(axum::middleware::from_fn_with_state(policy, require_caller))
        .route(
            "/slow",
            get(move || async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                done.store(true, Ordering::SeqCst);
                "done"
            }),
        );
    let routes = pay_net::InProcessRoutes::new();
    assert!(routes.insert("http://tokenizer.invalid:7102", app));
    let http = HttpClient::new(Arc::new(TcpTransport)).with_in_process(routes.clone());
    let client = ServiceClient::new(
        http.clone(),
        "tokenizer",
        "http://tokenizer.invalid:7102",
        Some(Arc::new(TokenIssuer::new(
            Arc::new(payments),
            env.clone(),
            Duration::from_secs(60),
        ))),
    );
    let r: serde_json::Value = client.post("/forward", &serde_json::json!({"n": 1})).await.unwrap();
    assert_eq!(r["caller"], "payments");
    assert_eq!(r["echo"]["n"], 1);
    assert_eq!(r["loopback"], true);
    assert_eq!(r["uri"], "/forward");
    assert_eq!(r["host"], "tokenizer.invalid:7102");
    assert_eq!(r["length"], "7");

    let impatient = client.clone().with_timeout(Duration::from_millis(50));
    match impatient.get::<serde_json::Value>("/slow").await {
        Err(CallError::Ambiguous { .. }) => {}
        other => panic!("a timeout must be ambiguous, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(finished.load(Ordering::SeqCst), "the handler ran to completion");

    // Addresses not registered still go over the transport (here: nothing listens).
    let elsewhere = ServiceClient::new(http, "payments", "http://127.0.0.1:1", None);
    match elsewhere.get::<serde_json::Value>("/x").await {
        Err(CallError::Unreachable { .. }) => {}
        other => panic!("expected a connect failure, got {other:?}"),
    }
}
