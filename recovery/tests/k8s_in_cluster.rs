//! `[kubernetes.<name>] in_cluster = true` as in a pod: the API server from
//! `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT`, over HTTPS verified against the service
//! account's `ca.crt`, with the bearer token read from its `token` file. A `k8s_status` and a
//! `k8s_scale` step run through it against the TLS fake API server, which checks the token on
//! every request; the same config with another CA is refused, and a token file removed later
//! gives a clear error that never shows the token.
//!
//! This binary holds one test because it sets the process environment (as a pod has it).

use std::{sync::Arc, time::Duration};

use recovery::{
    registry::Registry,
    resources::{KubeClusterDef, Resources},
    step::{ProgressSink, StepContext, StepError, StepOutput},
    testkit::kube::{FakeKube, FakeKubeOptions},
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.in-cluster-sa-token";

async fn run(
    reg: &Registry,
    kind: &str,
    params: serde_json::Value,
) -> Result<StepOutput, StepError> {
    let k = reg.get(kind).unwrap();
    k.validate(&params).unwrap();
    let step = k.build(&params).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let ctx = StepContext {
        run_id: 1,
        step_index: 0,
        attempt: 1,
        vars: Default::default(),
        progress: ProgressSink::new(tx),
        cancel: CancellationToken::new(),
        ..Default::default()
    };
    let r = step.run(&ctx).await;
    drop(ctx);
    while let Ok(l) = rx.try_recv() {
        println!("  [step] {l}");
    }
    r
}

fn registry(dir: &std::path::Path) -> Registry {
    let def = KubeClusterDef {
        in_cluster: true,
        service_account_dir: Some(dir.to_path_buf()),
        ..Default::default()
    };
    Registry::with_resources(Arc::new(Resources {
        kubernetes: [("us-east-1".to_string(), def)].into(),
        ..Default::default()
    }))
}

#[test]
fn in_cluster_config_reaches_the_api_server_with_the_service_account() {
    // A current-thread runtime: no other thread exists while the environment is set below.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let fake = rt.block_on(FakeKube::start_with(FakeKubeOptions {
        tick: Duration::from_millis(20),
        token: Some(TOKEN.into()),
        tls: true,
    }));
    fake.add_deployment("apex", "apex-api", 3);
    assert!(
        fake.url().starts_with("https://127.0.0.1:"),
        "{}",
        fake.url()
    );

    let sa = tempfile::tempdir().unwrap();
    std::fs::write(sa.path().join("token"), TOKEN).unwrap();
    std::fs::write(sa.path().join("ca.crt"), FakeKube::ca_pem()).unwrap();
    std::fs::write(sa.path().join("namespace"), "drbot").unwrap();
    // SAFETY: this binary's only test, on a current-thread runtime: no other thread reads or
    // writes the environment now.
    unsafe {
        std::env::set_var("KUBERNETES_SERVICE_HOST", "127.0.0.1");
        std::env::set_var("KUBERNETES_SERVICE_PORT", fake.addr().port().to_string());
    }
    let reg = registry(sa.path());

    rt.block_on(async {
        let status = run(
            &reg,
            "k8s_status",
            json!({ "kube": "us-east-1", "namespace": "apex", "name": "apex-api" }),
        )
        .await
        .expect("k8s_status through the in-cluster config");
        assert_eq!(
            status.summary,
            "deployment apex/apex-api: 3 replicas, 3 ready"
        );
        let scaled = run(
            &reg,
            "k8s_scale",
            json!({ "kube": "us-east-1", "namespace": "apex", "name": "apex-api",
                    "replicas": 5, "poll": "20ms", "wait": "10s" }),
        )
        .await
        .expect("k8s_scale through the in-cluster config");
        assert!(scaled.summary.contains("3 → 5"), "{}", scaled.summary);
    });
    // The fake saw every request with `Authorization: Bearer <the file's token>`.
    let requests = fake.requests();
    assert!(requests.len() >= 3, "{requests:?}");
    assert!(requests.iter().all(|r| r.authorized), "{requests:?}");
    assert!(
        requests
            .iter()
            .any(|r| r.method == "PATCH" && r.path.ends_with("/deployments/apex-api/scale"))
    );
    assert_eq!(
        fake.workload("deployments", "apex", "apex-api")
            .unwrap()
            .replicas,
        5
    );

    // A CA bundle that did not sign the server's certificate: the TLS handshake fails, so no
    // request reaches the fake.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("token"), TOKEN).unwrap();
    std::fs::write(other.path().join("ca.crt"), OTHER_CA).unwrap();
    let seen = fake.requests().len();
    let err = rt
        .block_on(run(
            &registry(other.path()),
            "k8s_status",
            json!({ "kube": "us-east-1", "namespace": "apex", "name": "apex-api" }),
        ))
        .unwrap_err();
    assert!(err.message.contains("us-east-1"), "{}", err.message);
    assert!(!err.message.contains(TOKEN), "{}", err.message);
    assert_eq!(
        fake.requests().len(),
        seen,
        "an unverified server got a request"
    );

    // The token file gone (the pod's mount missing): a configuration error naming the file,
    // never the token.
    std::fs::remove_file(sa.path().join("token")).unwrap();
    let err = rt
        .block_on(run(
            &reg,
            "k8s_status",
            json!({ "kube": "us-east-1", "namespace": "apex", "name": "apex-api" }),
        ))
        .unwrap_err();
    assert!(!err.retryable);
    assert!(
        err.message
            .starts_with("Kubernetes cluster us-east-1: in_cluster, but the service account token")
            && err.message.contains("is missing"),
        "{}",
        err.message
    );
    assert!(!err.message.contains(TOKEN));
}

/// A self-signed CA that signed nothing the fake serves.
const OTHER_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBnzCCAUWgAwIBAgIUBRAgFFaaIt61NzItumcx6AId1tgwCgYIKoZIzj0EAwIw
HDEaMBgGA1UEAwwRdW5yZWxhdGVkIHRlc3QgQ0EwIBcNMjYxMTI2MTkzNjAxWhgP
MjEyNjExMDIxOTM2MDFaMBwxGjAYBgNVBAMMEXVucmVsYXRlZCB0ZXN0IENBMFkw
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE+u51KA9krP3uABviAEXvluCNDaixTu40
Jw2e0EoSFUrIAd7GbNoPjqvKjaeFQtT9bvU06uqbQGM1q94QGpsH4qNjMGEwHQYD
VR0OBBYEFFTU7ZqkH4TRXrnOl5kw/XTaEPflMB8GA1UdIwQYMBaAFFTU7ZqkH4TR
XrnOl5kw/XTaEPflMA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0PAQH/BAQDAgIEMAoG
CCqGSM49BAMCA0gAMEUCIQDCWDEEqDTKf4u8d9PELuzuHvONYNzIsDcjHGim88KT
ggIgKQBAPpjBiYu7rp/bQLjlbs0mRcsoDYaJFI3RVbs0Qkk=
-----END CERTIFICATE-----
";
