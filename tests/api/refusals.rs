//! Every rule of docs/protocol.md, "Order of checks", attacked. Each attempt
//! is refused with the right status and leaves nothing stored, removed or
//! consumed.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use amo_storage::state::unix_now;

use crate::helpers::*;

fn sign_claims(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_replayed_token_is_refused() {
    let app = spawn_app().await;
    let owner = Account::new();
    let data = random_body(32);
    let token = app.token(&owner.address, json!("upload")).await;
    let proof = owner.prove(&token);
    let body = v1_body(&owner.address, json!({}), &data);
    expect_json(
        app.upload_v1(Some(&proof), &body).await,
        StatusCode::CREATED,
    )
    .await;
    let code = expect_error(
        app.upload_v1(Some(&proof), &body).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(code, "token_used");

    let id = format!("00000001{}", sha256_upper(&data));
    let token = app.token(&owner.address, json!("remove")).await;
    let proof = owner.prove(&token);
    assert_eq!(
        app.remove_v1(Some(&proof), &id).await.status(),
        StatusCode::NO_CONTENT
    );
    expect_code(
        app.remove_v1(Some(&proof), &id).await,
        StatusCode::UNAUTHORIZED,
        "token_used",
    )
    .await;
}

#[tokio::test]
async fn a_token_of_one_user_signed_with_another_key_is_refused_everywhere() {
    let (app, _) = spawn_pair().await;
    let alice = Account::new();
    let mallory = Account::new();
    let data = random_body(100);
    let id = store_parcel(&app, &alice, &data).await;

    // Mallory holds Alice's tokens but signs them with her own key.
    for operation in ["upload", "download", "remove"] {
        let token = app.token(&alice.address, json!(operation)).await;
        let forged = mallory.prove(&token);
        let response = match operation {
            "upload" => {
                app.upload_v1(
                    Some(&forged),
                    &v1_body(&alice.address, json!({}), &random_body(5)),
                )
                .await
            }
            "download" => app.download_v1(Some(&forged), &id).await,
            _ => app.remove_v1(Some(&forged), &id).await,
        };
        let code = expect_error(response, StatusCode::UNAUTHORIZED).await;
        assert_eq!(code, "key_mismatch", "{operation}");
        // Nothing was consumed: Alice can still use the same token.
        if operation == "download" {
            let ok = app.download_v1(Some(&alice.prove(&token)), &id).await;
            assert_eq!(ok.status(), StatusCode::OK);
        }
    }
    // Nothing stored, nothing removed.
    assert_eq!(app.stored_keys().await.len(), 1);
    expect_json(app.inspect_v1(&id, "owner").await, StatusCode::OK).await;
}

#[tokio::test]
async fn a_token_for_one_parcel_does_not_work_on_another() {
    let app = spawn_app().await;
    let owner = Account::new();
    let x = store_parcel(&app, &owner, &random_body(10)).await;
    let y = store_parcel(&app, &owner, &random_body(11)).await;

    let token = app
        .token(&owner.address, json!({"name": "remove", "id": x}))
        .await;
    let code = expect_error(
        app.remove_v1(Some(&owner.prove(&token)), &y).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(code, "forbidden");
    expect_json(app.inspect_v1(&y, "owner").await, StatusCode::OK).await;

    let token_dl = app
        .token(&owner.address, json!({"name": "download", "id": x}))
        .await;
    expect_code(
        app.download_v1(Some(&owner.prove(&token_dl)), &y).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;

    // Both tokens still work on the parcel they name (ids compare ignoring case).
    let ok = app
        .download_v1(Some(&owner.prove(&token_dl)), &x.to_lowercase())
        .await;
    assert_eq!(ok.status(), StatusCode::OK);
    let ok = app.remove_v1(Some(&owner.prove(&token)), &x).await;
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.stored_keys().await.len(), 1);
}

#[tokio::test]
async fn a_token_for_another_operation_is_refused() {
    let app = spawn_app().await;
    let owner = Account::new();
    let id = store_parcel(&app, &owner, &random_body(10)).await;

    let upload = app.token(&owner.address, json!("upload")).await;
    expect_code(
        app.download_v1(Some(&owner.prove(&upload)), &id).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let download = app
        .token(&owner.address, json!({"name": "download", "id": id}))
        .await;
    expect_code(
        app.remove_v1(Some(&owner.prove(&download)), &id).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let remove = app.token(&owner.address, json!("remove")).await;
    let body = v1_body(&owner.address, json!({}), &random_body(3));
    expect_code(
        app.upload_v1(Some(&owner.prove(&remove)), &body).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_eq!(app.stored_keys().await.len(), 1);

    // None was consumed.
    let ok = app.upload_v1(Some(&owner.prove(&upload)), &body).await;
    assert_eq!(ok.status(), StatusCode::CREATED);
    assert_eq!(
        app.download_v1(Some(&owner.prove(&download)), &id)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn tampered_unsigned_and_foreign_secret_tokens_are_refused() {
    let app = spawn_app().await;
    let alice = Account::new();
    let mallory = Account::new();
    let id = store_parcel(&app, &alice, &random_body(20)).await;
    let real = app.token(&mallory.address, json!("remove")).await;
    let mut claims = claims_of(&real);

    // Tampered payload: Mallory's token rewritten to Alice, old MAC kept.
    claims["user"] = json!(alice.address);
    let parts: Vec<&str> = real.split('.').collect();
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    // alg none, no MAC.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    // A valid HS256 token made with another secret.
    let foreign = sign_claims(&claims, &[7u8; 32]);
    for token in [tampered, none, foreign] {
        let code = expect_error(
            app.remove_v1(Some(&alice.prove(&token)), &id).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
        assert_eq!(code, "token_invalid", "{token}");
    }
    expect_json(app.inspect_v1(&id, "owner").await, StatusCode::OK).await;
}

#[tokio::test]
async fn an_expired_token_is_refused_even_while_its_record_lives() {
    let app = spawn_app().await;
    let owner = Account::new();
    let id = store_parcel(&app, &owner, &random_body(20)).await;
    let real = app.token(&owner.address, json!("remove")).await;
    let mut claims = claims_of(&real);
    claims["exp"] = json!(claims["iat"].as_u64().unwrap() - 1);
    let expired = sign_claims(&claims, secrecy::ExposeSecret::expose_secret(&app.settings.jwt_secret).as_bytes());
    // The jti of `expired` is the live one of `real`: only exp can refuse it.
    let code = expect_error(
        app.remove_v1(Some(&owner.prove(&expired)), &id).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(code, "token_expired");
    expect_json(app.inspect_v1(&id, "owner").await, StatusCode::OK).await;
    assert_eq!(
        app.remove_v1(Some(&owner.prove(&real)), &id).await.status(),
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn a_token_of_another_issuer_or_storage_is_refused() {
    let app = spawn_app().await;
    let other_storage = spawn_with(settings(&[("AMO_STORAGE_ID", "2")])).await;
    let owner = Account::new();
    let id = store_parcel(&app, &owner, &random_body(20)).await;
    let token = other_storage.token(&owner.address, json!("remove")).await;
    let code = expect_error(
        app.remove_v1(Some(&owner.prove(&token)), &id).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(code, "token_invalid");
    expect_json(app.inspect_v1(&id, "owner").await, StatusCode::OK).await;
}

#[tokio::test]
async fn a_body_that_does_not_match_the_declared_hash_is_refused_and_the_token_survives() {
    let app = spawn_app().await;
    let owner = Account::new();
    let declared = random_body(50);
    let (_, proof) = app.upload_token(&owner, &declared).await;
    let other = v1_body(&owner.address, json!({}), &random_body(50));
    let code = expect_error(
        app.upload_v1(Some(&proof), &other).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(code, "hash_mismatch");
    assert!(app.stored_keys().await.is_empty());
    let right = v1_body(&owner.address, json!({}), &declared);
    expect_json(
        app.upload_v1(Some(&proof), &right).await,
        StatusCode::CREATED,
    )
    .await;
}

#[tokio::test]
async fn missing_headers_and_junk_keys_or_signatures_are_refused() {
    let app = spawn_app().await;
    let owner = Account::new();
    let id = store_parcel(&app, &owner, &random_body(20)).await;
    let token = app.token(&owner.address, json!("remove")).await;
    let good = owner.prove(&token);

    let mut cases = Vec::new();
    for missing in 0..3 {
        let mut proof = good.clone();
        match missing {
            0 => proof.token = None,
            1 => proof.public_key = None,
            _ => proof.signature = None,
        }
        cases.push((proof, "missing_credentials"));
    }
    for junk_key in ["", "zz", "04abcd", &"04".repeat(65), &"A".repeat(87)] {
        let mut proof = good.clone();
        proof.public_key = Some(junk_key.to_owned());
        cases.push((proof, "invalid_public_key"));
    }
    let other_signature = owner.prove("another message").signature;
    for junk_signature in [
        "",
        "xyz",
        &"00".repeat(64),
        other_signature.as_deref().unwrap(),
    ] {
        let mut proof = good.clone();
        proof.signature = Some(junk_signature.to_owned());
        cases.push((proof, "invalid_signature"));
    }
    let mut junk_token = good.clone();
    junk_token.token = Some("not.a.jwt".into());
    cases.push((junk_token, "token_invalid"));

    for (proof, expected) in cases {
        let code = expect_error(
            app.remove_v1(Some(&proof), &id).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
        assert_eq!(code, expected, "{proof:?}");
    }
    expect_json(app.inspect_v1(&id, "owner").await, StatusCode::OK).await;
    assert_eq!(
        app.remove_v1(Some(&good), &id).await.status(),
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn non_owners_may_not_download_or_remove() {
    let app = spawn_app().await;
    let owner = Account::new();
    let stranger = Account::new();
    let data = random_body(30);
    let id = store_parcel(&app, &owner, &data).await;
    for operation in ["download", "remove"] {
        let token = app.token(&stranger.address, json!(operation)).await;
        let proof = stranger.prove(&token);
        let response = if operation == "download" {
            app.download_v1(Some(&proof), &id).await
        } else {
            app.remove_v1(Some(&proof), &id).await
        };
        expect_code(response, StatusCode::FORBIDDEN, "forbidden").await;
        // A 403 releases the token: it works on the stranger's own parcel.
        let own = store_parcel(&app, &stranger, &random_body(31)).await;
        let response = if operation == "download" {
            app.download_v1(Some(&proof), &own).await
        } else {
            app.remove_v1(Some(&proof), &own).await
        };
        let honoured = if operation == "download" {
            StatusCode::OK
        } else {
            StatusCode::NO_CONTENT
        };
        assert_eq!(response.status(), honoured, "{operation}");
    }
    let downloaded = {
        let token = app.token(&owner.address, json!("download")).await;
        expect_json(
            app.download_v1(Some(&owner.prove(&token)), &id).await,
            StatusCode::OK,
        )
        .await
    };
    assert_eq!(
        hex::decode(downloaded["data"].as_str().unwrap()).unwrap(),
        data
    );
}

#[tokio::test]
async fn an_owner_other_than_the_token_user_is_refused() {
    let app = spawn_app().await;
    let alice = Account::new();
    let bob = Account::new();
    let token = app.token(&alice.address, json!("upload")).await;
    let proof = alice.prove(&token);
    let data = random_body(12);
    let code = expect_error(
        app.upload_v1(Some(&proof), &v1_body(&bob.address, json!({}), &data))
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(code, "forbidden");
    expect_code(
        app.upload_v1(
            Some(&proof),
            &v1_body(&alice.address, json!({"owner": bob.address}), &data),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert!(app.stored_keys().await.is_empty());
    expect_json(
        app.upload_v1(Some(&proof), &v1_body(&alice.address, json!({}), &data))
            .await,
        StatusCode::CREATED,
    )
    .await;
}

#[tokio::test]
async fn another_owner_uploading_the_same_content_gets_409() {
    let app = spawn_app().await;
    let alice = Account::new();
    let bob = Account::new();
    let data = random_body(40);
    let id = store_parcel(&app, &alice, &data).await;
    let token = app.token(&bob.address, json!("upload")).await;
    let code = expect_error(
        app.upload_v1(
            Some(&bob.prove(&token)),
            &v1_body(&bob.address, json!({}), &data),
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(code, "owned_by_another");
    let owner = expect_json(app.inspect_v1(&id, "owner").await, StatusCode::OK).await;
    assert_eq!(owner["owner"], json!(alice.address));
}

#[tokio::test]
async fn a_key_parameter_never_skips_auth_on_post_or_delete() {
    let app = spawn_app().await;
    let owner = Account::new();
    let id = store_parcel(&app, &owner, &random_body(20)).await;
    for key in ["metadata", "owner"] {
        let response = app
            .http
            .delete(format!("{}/api/v1/parcels/{id}?key={key}", app.base))
            .send()
            .await
            .unwrap();
        expect_code(response, StatusCode::UNAUTHORIZED, "missing_credentials").await;
        let response = app
            .http
            .post(format!("{}/api/v1/parcels?key={key}", app.base))
            .json(&v1_body(&owner.address, json!({}), &random_body(4)))
            .send()
            .await
            .unwrap();
        expect_code(response, StatusCode::UNAUTHORIZED, "missing_credentials").await;
    }
    assert_eq!(app.stored_keys().await.len(), 1);
}

#[tokio::test]
async fn an_oversized_v1_body_is_refused_with_413() {
    let app = spawn_with(settings(&[("AMO_V1_MAX_DATA_BYTES", "1024")])).await;
    let owner = Account::new();
    let token = app.token(&owner.address, json!("upload")).await;
    let proof = owner.prove(&token);
    let big = random_body(8 * 1024);
    let response = app
        .upload_v1(Some(&proof), &v1_body(&owner.address, json!({}), &big))
        .await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        body["error"].as_str().unwrap().contains("/api/v2/parcels"),
        "{body}"
    );
    // Just over the limit in data, under it in body bytes: still 413.
    let response = app
        .upload_v1(
            Some(&proof),
            &v1_body(&owner.address, json!({}), &random_body(1025)),
        )
        .await;
    expect_code(response, StatusCode::PAYLOAD_TOO_LARGE, "too_large").await;
    assert!(app.stored_keys().await.is_empty());
    let fits = v1_body(&owner.address, json!({}), &random_body(1024));
    expect_json(
        app.upload_v1(Some(&proof), &fits).await,
        StatusCode::CREATED,
    )
    .await;
}

#[tokio::test]
async fn oversized_metadata_is_refused_with_413() {
    let app = spawn_app().await;
    let owner = Account::new();
    let token = app.token(&owner.address, json!("upload")).await;
    let proof = owner.prove(&token);
    let metadata = json!({"blob": "x".repeat(9 * 1024)});
    let response = app
        .upload_v1(
            Some(&proof),
            &v1_body(&owner.address, metadata, &random_body(4)),
        )
        .await;
    expect_code(response, StatusCode::PAYLOAD_TOO_LARGE, "too_large").await;
    assert!(app.stored_keys().await.is_empty());
}

#[tokio::test]
async fn a_failed_request_does_not_consume_its_token() {
    let app = spawn_app().await;
    let owner = Account::new();
    let token = app.token(&owner.address, json!("download")).await;
    let proof = owner.prove(&token);
    let unknown = format!("00000001{}", sha256_upper(b"never stored"));
    let code = expect_error(
        app.download_v1(Some(&proof), &unknown).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(code, "not_found");
    let data = random_body(16);
    let id = store_parcel(&app, &owner, &data).await;
    let downloaded = expect_json(app.download_v1(Some(&proof), &id).await, StatusCode::OK).await;
    assert_eq!(
        hex::decode(downloaded["data"].as_str().unwrap()).unwrap(),
        data
    );
    expect_code(
        app.download_v1(Some(&proof), &id).await,
        StatusCode::UNAUTHORIZED,
        "token_used",
    )
    .await;
}

#[tokio::test]
async fn a_v1_download_of_a_parcel_over_the_limit_points_to_v2_and_keeps_the_token() {
    let (writer, _) = spawn_pair().await;
    let owner = Account::new();
    let id = store_parcel(&writer, &owner, &random_body(2048)).await;
    let mut small = writer.settings.clone();
    small.v1_max_data_bytes = 1024;
    let reader = spawn_beside(&writer, small).await;
    let token = reader.token(&owner.address, json!("download")).await;
    let response = reader.download_v1(Some(&owner.prove(&token)), &id).await;
    expect_code(response, StatusCode::PAYLOAD_TOO_LARGE, "too_large").await;
    let response = writer.download_v1(Some(&owner.prove(&token)), &id).await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// Every refusal that comes after the token is claimed (docs/protocol.md,
/// "Order of checks") gives the token back: `issued` again, for the rest of
/// its own lifetime, not a fresh one; and the same token then succeeds.
#[tokio::test]
async fn every_refusal_after_the_claim_leaves_the_token_usable_for_its_remaining_lifetime() {
    let app = spawn_app().await;
    let alice = Account::new();
    let bob = Account::new();
    let taken = random_body(64);
    let alices = app.store_v2(&alice, &taken).await;
    let bobs = app.store_v2(&bob, &random_body(65)).await;
    let empty = app.store_v2(&alice, b"").await;
    let unknown = format!("00000001{}", sha256_upper(b"never stored"));
    let fresh = random_body(66);
    let hash = |data: &[u8]| json!({"name": "upload", "hash": sha256_upper(data)});

    // Every token first, then one wait: each is two seconds old when used.
    let download_403 = app.token(&bob.address, json!("download")).await;
    let remove_403 = app.token(&bob.address, json!("remove")).await;
    let owner_403 = app.token(&bob.address, json!("upload")).await;
    let download_404 = app.token(&alice.address, json!("download")).await;
    let upload_409 = app.token(&bob.address, hash(&taken)).await;
    let upload_422 = app.token(&alice.address, hash(&fresh)).await;
    let download_416 = app
        .token(&alice.address, json!({"name": "download", "id": empty}))
        .await;
    let metadata_v2 = app.token(&bob.address, hash(&fresh)).await;
    let metadata_v1 = app.token(&bob.address, json!("upload")).await;
    let malformed_v2 = app.token(&alice.address, hash(&taken)).await;
    wait_until_aged(&malformed_v2).await;
    let big = json!({"blob": "x".repeat(9 * 1024)});

    // 403: a non-owner's download and remove, an owner other than the user.
    let sent = unix_now();
    let proof = bob.prove(&download_403);
    let answer = app.download_v2(Some(&proof), &alices, None).await;
    expect_code(answer, StatusCode::FORBIDDEN, "forbidden").await;
    assert_released(&app, &download_403, sent).await;
    assert_eq!(app.download_v2(Some(&proof), &bobs, None).await.status(), StatusCode::OK);

    let sent = unix_now();
    let proof = bob.prove(&remove_403);
    let answer = app.remove_v2(Some(&proof), &alices).await;
    expect_code(answer, StatusCode::FORBIDDEN, "forbidden").await;
    assert_released(&app, &remove_403, sent).await;

    let sent = unix_now();
    let proof = bob.prove(&owner_403);
    let answer = app
        .upload_v1(Some(&proof), &v1_body(&alice.address, json!({}), &fresh))
        .await;
    expect_code(answer, StatusCode::FORBIDDEN, "forbidden").await;
    assert_released(&app, &owner_403, sent).await;
    let answer = app
        .upload_v1(Some(&proof), &v1_body(&bob.address, json!({}), b"owned"))
        .await;
    expect_json(answer, StatusCode::CREATED).await;

    // 404: an unknown parcel.
    let sent = unix_now();
    let proof = alice.prove(&download_404);
    let answer = app.download_v1(Some(&proof), &unknown).await;
    expect_code(answer, StatusCode::NOT_FOUND, "not_found").await;
    assert_released(&app, &download_404, sent).await;
    assert_eq!(app.download_v1(Some(&proof), &alices).await.status(), StatusCode::OK);

    // 422: a body that is not the declared one.
    let sent = unix_now();
    let proof = alice.prove(&upload_422);
    let answer = app.upload_v2(Some(&proof), random_body(66), None).await;
    expect_code(answer, StatusCode::UNPROCESSABLE_ENTITY, "hash_mismatch").await;
    assert_released(&app, &upload_422, sent).await;

    // 416: any range of an empty parcel.
    let sent = unix_now();
    let proof = alice.prove(&download_416);
    let answer = app.download_v2(Some(&proof), &empty, Some("bytes=0-")).await;
    expect_code(answer, StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable").await;
    assert_released(&app, &download_416, sent).await;
    assert_eq!(app.download_v2(Some(&proof), &empty, None).await.status(), StatusCode::OK);

    // 413: oversized metadata, v2 header and v1 body; 400: malformed metadata.
    let sent = unix_now();
    let proof = bob.prove(&metadata_v2);
    let answer = app
        .upload_v2(Some(&proof), fresh.clone(), Some(&big.to_string()))
        .await;
    expect_code(answer, StatusCode::PAYLOAD_TOO_LARGE, "too_large").await;
    assert_released(&app, &metadata_v2, sent).await;

    let sent = unix_now();
    let proof = bob.prove(&metadata_v1);
    let answer = app
        .upload_v1(Some(&proof), &v1_body(&bob.address, big.clone(), b"small"))
        .await;
    expect_code(answer, StatusCode::PAYLOAD_TOO_LARGE, "too_large").await;
    assert_released(&app, &metadata_v1, sent).await;
    let answer = app
        .upload_v1(Some(&proof), &v1_body(&bob.address, json!({}), b"small"))
        .await;
    expect_json(answer, StatusCode::CREATED).await;

    let sent = unix_now();
    let proof = alice.prove(&malformed_v2);
    let answer = app.upload_v2(Some(&proof), taken.clone(), Some("[1,2]")).await;
    expect_code(answer, StatusCode::BAD_REQUEST, "bad_request").await;
    assert_released(&app, &malformed_v2, sent).await;
    assert_eq!(
        expect_json(app.upload_v2(Some(&proof), taken.clone(), None).await, StatusCode::OK).await["id"],
        json!(alices)
    );

    // 409: content another account stores. Once Alice removed it, the same
    // token of Bob's stores it.
    let sent = unix_now();
    let proof = bob.prove(&upload_409);
    let answer = app.upload_v2(Some(&proof), taken.clone(), None).await;
    expect_code(answer, StatusCode::CONFLICT, "owned_by_another").await;
    assert_released(&app, &upload_409, sent).await;
    let remove = app
        .token(&alice.address, json!({"name": "remove", "id": alices}))
        .await;
    let answer = app.remove_v2(Some(&alice.prove(&remove)), &alices).await;
    assert_eq!(answer.status(), StatusCode::NO_CONTENT);
    let answer = app.upload_v2(Some(&proof), taken.clone(), None).await;
    expect_json(answer, StatusCode::CREATED).await;

    // The last refused tokens succeed too (Bob's `fresh` is Alice's by then:
    // 409 again), and every token that succeeded leaves no record.
    let answer = app.remove_v2(Some(&bob.prove(&remove_403)), &bobs).await;
    assert_eq!(answer.status(), StatusCode::NO_CONTENT);
    let answer = app.upload_v2(Some(&alice.prove(&upload_422)), fresh.clone(), None).await;
    expect_json(answer, StatusCode::CREATED).await;
    let answer = app.upload_v2(Some(&bob.prove(&metadata_v2)), fresh.clone(), None).await;
    expect_code(answer, StatusCode::CONFLICT, "owned_by_another").await;
    for token in [&download_403, &download_404, &download_416, &owner_403, &metadata_v1, &malformed_v2, &upload_409, &remove_403, &upload_422] {
        assert_eq!(app.token_record(token).await, None, "a used token leaves no record");
    }
}
