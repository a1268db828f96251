//! The audit log (`amo_storage::audit`): one event per parcel operation,
//! refusals after the token check included, written when the operation
//! ends, with exact fields; and no token, signature or public key in any
//! log line. The service runs as a process of its own, so its log is its
//! own.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    helpers::*,
    process::{ServiceProcess, process_env},
};

/// The audit events of `service` for `request_id`.
fn audit_events(service: &ServiceProcess, request_id: &str) -> Vec<Value> {
    service
        .log_lines()
        .into_iter()
        .filter(|line| line["target"] == "amo_storage::audit" && line["request_id"] == request_id)
        .collect()
}

/// The one audit event of `request_id`, once written; fails if there are
/// more.
async fn the_event(service: &ServiceProcess, request_id: &str) -> Value {
    eventually(10, "the audit event is written", || async {
        !audit_events(service, request_id).is_empty()
    })
    .await;
    let events = audit_events(service, request_id);
    assert_eq!(events.len(), 1, "one event per operation: {events:?}");
    events.into_iter().next().unwrap()
}

/// `event` has exactly `expected` for these fields, a duration, and no
/// other field but the logger's own.
fn assert_fields(event: &Value, expected: Value) {
    let mut fields = event.as_object().unwrap().clone();
    for own in ["timestamp", "level", "target", "message"] {
        fields.remove(own);
    }
    let duration = fields.remove("duration_ms").expect("a duration");
    assert!(duration.as_f64().is_some_and(|ms| ms >= 0.0), "{event}");
    assert_eq!(event["message"], "audit");
    assert_eq!(Value::Object(fields), expected, "the audit event {event}");
}

/// The fields of an event from this test's client (127.0.0.1) for
/// `account` on `parcel`, with `bytes` in and out, and an error `code`.
fn expected(
    request_id: &str,
    account: &Account,
    operation: &str,
    parcel: &str,
    bytes: (usize, usize),
    status: u16,
    code: Option<&str>,
) -> Value {
    let mut fields = json!({
        "request_id": request_id,
        "client": "127.0.0.1",
        "account": account.address,
        "operation": operation,
        "parcel": parcel,
        "bytes_in": bytes.0,
        "bytes_out": bytes.1,
        "status": status,
        "body_complete": true,
    });
    if let Some(code) = code {
        fields["code"] = json!(code);
    }
    fields
}

/// A request of `method` on `path` with `request_id` and `proof`.
fn proven(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    request_id: &str,
    proof: &Proof,
) -> reqwest::RequestBuilder {
    app.http
        .request(method, format!("{}{path}", app.base))
        .header("X-Request-Id", request_id)
        .proven(proof)
}

fn request_id(what: &str) -> String {
    format!("audit-{what}-{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn every_parcel_operation_writes_one_audit_event_when_it_ends_without_secrets() {
    let (env, backends) = process_env();
    let service = ServiceProcess::start(&env).await;
    let app = service.app(&env, backends);
    let owner = Account::new();
    let data = random_body(3000);

    // An upload: bytes in are the body's.
    let (_, upload_proof) = app.upload_token(&owner, &data).await;
    let upload_id = request_id("upload");
    let answer = proven(&app, reqwest::Method::POST, "/api/v2/parcels", &upload_id, &upload_proof)
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::CREATED);
    let answer_text = answer.text().await.unwrap();
    let id = serde_json::from_str::<Value>(&answer_text).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_fields(
        &the_event(&service, &upload_id).await,
        expected(&upload_id, &owner, "v2_upload", &id, (3000, answer_text.len()), 201, None),
    );

    // A download: bytes out are the body's.
    let download_token = app
        .token(&owner.address, json!({"name": "download", "id": id}))
        .await;
    let download_proof = owner.prove(&download_token);
    let download_id = request_id("download");
    let path = format!("/api/v2/parcels/{id}");
    let answer = proven(&app, reqwest::Method::GET, &path, &download_id, &download_proof)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.bytes().await.unwrap(), data);
    assert_fields(
        &the_event(&service, &download_id).await,
        expected(&download_id, &owner, "v2_download", &id, (0, 3000), 200, None),
    );

    // A refusal after the token check: an upload token cannot remove. The
    // caller was proven, so the event names them.
    let refused_id = request_id("refused");
    let answer = proven(&app, reqwest::Method::DELETE, &path, &refused_id, &upload_proof)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    let refusal = answer.text().await.unwrap();
    assert_fields(
        &the_event(&service, &refused_id).await,
        expected(&refused_id, &owner, "v2_remove", &id, (0, refusal.len()), 403, Some("forbidden")),
    );

    // A remove.
    let remove_token = app
        .token(&owner.address, json!({"name": "remove", "id": id}))
        .await;
    let remove_proof = owner.prove(&remove_token);
    let remove_id = request_id("remove");
    let answer = proven(&app, reqwest::Method::DELETE, &path, &remove_id, &remove_proof)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::NO_CONTENT);
    assert_fields(
        &the_event(&service, &remove_id).await,
        expected(&remove_id, &owner, "v2_remove", &id, (0, 0), 204, None),
    );

    // A request outside the parcel operations writes none.
    let auth_id = request_id("auth");
    let answer = app
        .http
        .post(format!("{}/api/v2/auth", app.base))
        .header("X-Request-Id", &auth_id)
        .json(&json!({"user": owner.address, "operation": {"name": "remove", "id": id}}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    // The remove's event came after this request's own answer line would:
    // the log is in order, so a later event proves none was written for it.
    let sentinel = request_id("sentinel");
    let answer = app
        .http
        .get(format!("{}/api/v2/parcels/{id}/metadata", app.base))
        .header("X-Request-Id", &sentinel)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        the_event(&service, &sentinel).await["operation"],
        "v2_inspect"
    );
    assert!(audit_events(&service, &auth_id).is_empty());

    // No token, signature or public key in any line.
    let text: String = service
        .log_lines()
        .iter()
        .map(|line| format!("{line}\n"))
        .collect::<String>()
        .to_lowercase();
    for proof in [&upload_proof, &download_proof, &remove_proof] {
        let token = proof.token.as_deref().unwrap();
        let secrets = [
            ("a token", token),
            ("a token's signature part", token.rsplit('.').next().unwrap()),
            ("a proof signature", proof.signature.as_deref().unwrap()),
            ("a public key", proof.public_key.as_deref().unwrap()),
        ];
        for (what, secret) in secrets {
            assert!(
                !text.contains(&secret.to_lowercase()),
                "{what} appears in the logs"
            );
        }
    }
}

#[tokio::test]
async fn a_cut_download_is_audited_when_cut_with_the_bytes_sent() {
    let (env, backends) = process_env();
    let service = ServiceProcess::start(&env).await;
    let app = service.app(&env, backends);
    let owner = Account::new();
    // Larger than what the loopback socket buffers hold, so the answer
    // cannot all be sent while the client reads nothing.
    let size = 32 << 20;
    let data = random_body(size);
    let id = app.store_v2(&owner, &data).await;
    let token = app
        .token(&owner.address, json!({"name": "download", "id": id}))
        .await;
    let download_id = request_id("cut");
    let path = format!("/api/v2/parcels/{id}");
    let mut answer = proven(&app, reqwest::Method::GET, &path, &download_id, &owner.prove(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let first = answer.chunk().await.unwrap().expect("a first chunk");
    assert!(!first.is_empty());
    // The headers are out and bytes flow, but the operation has not ended:
    // no event yet. (Its `answered` line is written already.)
    eventually(10, "the answer line is written", || async {
        service.log_lines().iter().any(|line| {
            line["message"] == "answered"
                && line["spans"]
                    .as_array()
                    .is_some_and(|spans| spans.iter().any(|span| span["request_id"] == download_id.as_str()))
        })
    })
    .await;
    assert!(
        audit_events(&service, &download_id).is_empty(),
        "the event waits for the body's end"
    );
    drop(answer);
    let event = the_event(&service, &download_id).await;
    assert_eq!(event["operation"], "v2_download");
    assert_eq!(event["status"], 200);
    assert_eq!(event["body_complete"], false, "{event}");
    let sent = event["bytes_out"].as_u64().unwrap();
    assert!(
        sent >= first.len() as u64 && sent < size as u64,
        "bytes out {sent} of {size}"
    );
}

/// The audit events of `service` for `operation` on the tus upload
/// `upload`.
fn upload_events(service: &ServiceProcess, operation: &str, upload: &str) -> Vec<Value> {
    service
        .log_lines()
        .into_iter()
        .filter(|line| {
            line["target"] == "amo_storage::audit"
                && line["operation"] == operation
                && line["upload"] == upload
        })
        .collect()
}

#[tokio::test]
async fn a_resumable_upload_writes_one_event_per_request_with_its_upload_id() {
    use crate::resumable::{create, head, header, location, patch_in_sequence};

    let (env, backends) = process_env();
    let service = ServiceProcess::start(&env).await;
    let app = service.app(&env, backends);
    let owner = Account::new();
    let data = random_body(2000);
    let (_, proof) = app.upload_token(&owner, &data).await;
    let created = create(&app, &proof, data.len(), None).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let path = location(&created);
    let upload = path.rsplit('/').next().unwrap().to_owned();
    assert_eq!(head(&app, &path, &proof).await.status(), StatusCode::OK);
    let patched = patch_in_sequence(&app, &path, &proof, 0, 0, &data).await;
    assert_eq!(patched.status(), StatusCode::NO_CONTENT);
    let parcel = header(&patched, "x-parcel-id");

    for (operation, status, bytes_in, parcel) in [
        ("tus_create", 201, 0, None),
        ("tus_head", 200, 0, None),
        ("tus_patch", 204, data.len(), Some(parcel.as_str())),
    ] {
        eventually(10, "the audit event is written", || async {
            !upload_events(&service, operation, &upload).is_empty()
        })
        .await;
        let events = upload_events(&service, operation, &upload);
        assert_eq!(events.len(), 1, "one {operation} event: {events:?}");
        let event = &events[0];
        assert_eq!(event["account"], owner.address.as_str(), "{event}");
        assert_eq!(event["client"], "127.0.0.1");
        assert_eq!(event["status"], status, "{event}");
        assert_eq!(event["bytes_in"], bytes_in, "{event}");
        assert_eq!(event["bytes_out"], 0, "{event}");
        assert_eq!(event["body_complete"], true, "{event}");
        assert_eq!(event.get("parcel").and_then(Value::as_str), parcel, "{event}");
        assert!(event["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    }
}
