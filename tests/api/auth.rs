//! `POST /api/v1/auth` and `/api/v2/auth`.

use amo_storage::app::Backends;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    helpers::*,
    limits::{client_from, unique_loopback},
    recorded_state::RecordedState,
};

fn decode_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn issues_the_designed_jwt_and_records_its_jti_with_the_ttl() {
    let app = spawn_with(settings(&[("AMO_TOKEN_TTL_SECS", "120")])).await;
    let account = Account::new();
    let operation = json!({"name": "upload", "hash": "ab".repeat(32)});
    let token = app
        .token(&account.address.to_lowercase(), operation.clone())
        .await;

    let header = decode_part(&token, 0);
    let secret = secrecy::ExposeSecret::expose_secret(&app.settings.jwt_secret);
    let kid = amo_storage::auth::jwt::key_id(secret.as_bytes());
    assert_eq!(header, json!({"alg": "HS256", "typ": "JWT", "kid": kid}));
    let claims = decode_part(&token, 1);
    assert_eq!(claims["iss"], json!("amo-storage-service"));
    assert_eq!(claims["aud"], json!("00000001"));
    assert_eq!(claims["user"], json!(account.address));
    assert_eq!(claims["operation"], operation, "the operation as received");
    let jti = claims["jti"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(jti).unwrap().get_version_num(), 4);
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert_eq!(exp - iat, 120);

    let ttl = app.token_lifetime(&token).await.unwrap().as_secs();
    assert!((110..=120).contains(&ttl), "TTL {ttl}");
}

#[tokio::test]
async fn v2_auth_issues_the_same_tokens() {
    let app = spawn_app().await;
    let owner = Account::new();
    let response = app
        .http
        .post(format!("{}/api/v2/auth", app.base))
        .json(&json!({"user": owner.address, "operation": "upload"}))
        .send()
        .await
        .unwrap();
    let token = expect_json(response, StatusCode::OK).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = v1_body(&owner.address, json!({}), &random_body(9));
    expect_json(
        app.upload_v1(Some(&owner.prove(&token)), &body).await,
        StatusCode::CREATED,
    )
    .await;
}

#[tokio::test]
async fn malformed_auth_requests_answer_400_in_json() {
    let app = spawn_app().await;
    let user = Account::new().address;
    let cases = [
        json!({"user": "XYZ", "operation": "upload"}),
        json!({"user": user[..39], "operation": "upload"}),
        json!({"user": user, "operation": "delete"}),
        json!({"user": user, "operation": {"name": "upload", "hash": "abc"}}),
        json!({"user": user, "operation": {"name": "download", "id": "00000001"}}),
        json!({"user": user, "operation": {"name": "download", "hash": "ab".repeat(32)}}),
        json!({"user": user, "operation": 5}),
        // The object form always carries its hash or id (the bare name is
        // the unscoped form).
        json!({"user": user, "operation": {"name": "upload"}}),
        json!({"user": user, "operation": {"name": "download", "id": null}}),
        json!({"user": user, "operation": {"name": "remove"}}),
        json!({"user": user}),
        json!({"operation": "upload"}),
        json!([1, 2]),
    ];
    for body in cases {
        expect_code(app.auth_raw(body.clone()).await, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    let not_json = app
        .http
        .post(format!("{}/api/v1/auth", app.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect_code(not_json, StatusCode::BAD_REQUEST, "bad_request").await;
}

/// `POST /api/v1/auth` from `client`; the status, and the token's `jti` if
/// one was issued (else the error code).
async fn ask_from(client: &reqwest::Client, app: &TestApp, body: Value) -> (StatusCode, String) {
    let response = client
        .post(format!("{}/api/v1/auth", app.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = expect_json(response, status).await;
    match status {
        StatusCode::OK => {
            let jti = claims_of(body["token"].as_str().unwrap())["jti"].clone();
            (status, jti.as_str().unwrap().to_owned())
        }
        _ => (status, body["code"].as_str().unwrap().to_owned()),
    }
}

/// A refused token request (400, 429 from the address limit) creates no
/// token record and takes no outstanding slot: the state holds records and
/// slots for the issued tokens only, and the refused requests leave the
/// account its whole allowance. Past the allowance, the oldest token is
/// revoked.
#[tokio::test]
async fn refused_token_requests_record_no_token_and_take_no_outstanding_slot() {
    let settings = settings(&[
        ("AMO_MAX_OUTSTANDING_TOKENS", "2"),
        ("AMO_AUTH_RATE_PER_IP", "3"),
    ]);
    let backends = Backends::from_settings(&settings).unwrap();
    let recording = RecordedState::new(backends.state.clone());
    let app = spawn_on(
        settings,
        Backends {
            state: recording.clone(),
            store: backends.store,
            s3_keys: backends.s3_keys,
        },
    )
    .await;
    let user = Account::new().address;
    let (client, crowded) = (
        client_from(unique_loopback()),
        client_from(unique_loopback()),
    );
    let mut issued = Vec::new();
    let mut refused = Vec::new();

    // Malformed operations for the account: 400.
    for operation in [
        json!("delete"),
        json!({"name": "upload", "hash": "abc"}),
        json!({"name": "upload", "hash": "ab".repeat(32), "extra": 1}),
    ] {
        refused.push(ask_from(&client, &app, json!({"user": user, "operation": operation})).await);
    }
    // From an address past its limit: 429.
    for _ in 0..3 {
        let other = Account::new().address;
        let (status, jti) =
            ask_from(&crowded, &app, json!({"user": other, "operation": "upload"})).await;
        assert_eq!(status, StatusCode::OK);
        issued.push(jti);
    }
    refused.push(ask_from(&crowded, &app, json!({"user": user, "operation": "upload"})).await);
    // The account still has its whole allowance of two; a third revokes
    // the first.
    for _ in 0..3 {
        let (status, jti) = ask_from(&client, &app, json!({"user": user, "operation": "upload"})).await;
        assert_eq!(status, StatusCode::OK, "{jti}");
        issued.push(jti);
    }
    let record = async |jti: &str| {
        let key = documented_keys::token(jti);
        recording.inner().value(&key).await.unwrap()
    };
    assert_eq!(record(&issued[3]).await, None, "revoked");
    for jti in &issued[4..] {
        assert_eq!(record(jti).await.as_deref(), Some("issued"));
    }

    let codes: Vec<_> = refused.iter().map(|(status, code)| (status.as_u16(), code.as_str())).collect();
    assert_eq!(
        codes,
        [
            (400, "bad_request"),
            (400, "bad_request"),
            (400, "bad_request"),
            (429, "rate_limited"),
        ]
    );
    let expected: Vec<String> = issued
        .iter()
        .map(|jti| documented_keys::token(jti))
        .collect();
    let calls = recording.calls();
    let records: Vec<&String> = calls
        .iter()
        .filter(|call| call.operation == "set_new" && call.yes && call.key.starts_with("amo:token:"))
        .map(|call| &call.key)
        .collect();
    assert_eq!(records, expected.iter().collect::<Vec<_>>(), "token records");
    let slots: Vec<&Option<String>> = calls
        .iter()
        .filter(|call| call.operation == "add_evicting")
        .map(|call| &call.member)
        .collect();
    assert_eq!(slots.len(), issued.len(), "outstanding slots: {slots:?}");
    for (member, jti) in slots.iter().zip(&issued) {
        assert_eq!(member.as_deref(), Some(jti.as_str()), "outstanding slots: {slots:?}");
    }
}

/// docs/protocol.md, the Redis key layout: a used token leaves its
/// client's outstanding set ("members leave when used"), so it holds no
/// slot of the cap. With a cap of two, the newer of two tokens used, a
/// third asked for revokes none: the older one still works.
#[tokio::test]
async fn a_used_token_frees_its_outstanding_slot() {
    let app = spawn_with(settings(&[("AMO_MAX_OUTSTANDING_TOKENS", "2")])).await;
    let owner = Account::new();
    let data = random_body(100);
    let older = app.token(&owner.address, json!("upload")).await;
    let (_, proof) = app.upload_token(&owner, &data).await;
    let stored = app.upload_v2(Some(&proof), data, None).await;
    expect_json(stored, StatusCode::CREATED).await;
    let third = app.token(&owner.address, json!("upload")).await;
    assert_eq!(
        app.token_record(&older).await.as_deref(),
        Some("issued"),
        "the older unused token was revoked: the used one still took a slot"
    );
    assert_eq!(app.token_record(&third).await.as_deref(), Some("issued"));
}

/// A token signed by `secret` with these claims and this `kid`.
fn signed(claims: &Value, kid: Option<String>, secret: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = kid;
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn tokens_outlive_a_rotation_of_the_jwt_secret_but_not_its_retirement() {
    let (a, b) = (jwt_secret("key-a"), jwt_secret("key-b"));
    let kid = |secret: &str| amo_storage::auth::jwt::key_id(secret.as_bytes());
    let before = spawn_with(settings(&[("AMO_JWT_SECRET", a.as_str())])).await;
    let owner = Account::new();
    let (first, second) = (random_body(100), random_body(200));
    let (token, proof) = before.upload_token(&owner, &first).await;
    let (retired_token, retired_proof) = before.upload_token(&owner, &second).await;
    let third = random_body(300);
    let (unnamed_token, _) = before.upload_token(&owner, &third).await;
    assert_eq!(decode_part(&token, 0)["kid"], json!(kid(&a)));
    // Its claims without a kid, as a version before key ids wrote them.
    let plain = signed(&decode_part(&unnamed_token, 1), None, &a);

    // B signs, A still verifies.
    let after = spawn_beside(&before, with_jwt_keys(&before.settings, &b, &[&a])).await;
    let response = after.upload_v2(Some(&proof), first.clone(), None).await;
    let id = expect_json(response, StatusCode::CREATED).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = after.upload_v2(Some(&owner.prove(&plain)), third, None).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let fresh = after
        .token(&owner.address, json!({"name": "download", "id": id}))
        .await;
    assert_eq!(decode_part(&fresh, 0)["kid"], json!(kid(&b)));

    // A retired: its tokens, with or without a kid, are refused; B's serve.
    let retired = spawn_beside(&before, with_jwt_keys(&before.settings, &b, &[])).await;
    let response = retired.upload_v2(Some(&retired_proof), second.clone(), None).await;
    expect_code(response, StatusCode::UNAUTHORIZED, "token_invalid").await;
    let unnamed = signed(&decode_part(&retired_token, 1), None, &a);
    let response = retired
        .upload_v2(Some(&owner.prove(&unnamed)), second.clone(), None)
        .await;
    expect_code(response, StatusCode::UNAUTHORIZED, "token_invalid").await;
    let response = retired.download_v2(Some(&owner.prove(&fresh)), &id, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap(), first);

    // Forged kids: one no key has, and A's kid on a token A did not sign.
    let claims = decode_part(&retired_token, 1);
    for forged in [
        signed(&claims, Some("0011223344556677".into()), &b),
        signed(&claims, Some(kid(&a)), &b),
        signed(&claims, Some(kid(&b)), &jwt_secret("attacker")),
    ] {
        let response = after
            .upload_v2(Some(&owner.prove(&forged)), second.clone(), None)
            .await;
        expect_code(response, StatusCode::UNAUTHORIZED, "token_invalid").await;
    }
    // The retired token was never used: it still uploads where A verifies.
    let response = after.upload_v2(Some(&retired_proof), second.clone(), None).await;
    assert_eq!(response.status(), StatusCode::CREATED);
}
