//! The public clients' and the seed's round trips through v1.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn public_clients_round_trip_upload_inspect_download_remove() {
    let app = spawn_app().await;
    let alice = Account::new();
    let data: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let hash = sha256_upper(&data);

    let token = app
        .token(
            &alice.address,
            json!({"name": "upload", "hash": hash.to_lowercase()}),
        )
        .await;
    let metadata = json!({"title": "every byte", "tags": ["a", "b"]});
    let response = app
        .upload_v1(
            Some(&alice.prove(&token)),
            &v1_body(&alice.address, metadata.clone(), &data),
        )
        .await;
    let created = expect_json(response, StatusCode::CREATED).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(id, format!("00000001{hash}"));

    let inspected = expect_json(app.inspect_v1(&id, "metadata").await, StatusCode::OK).await;
    assert_eq!(inspected["id"], json!(id));
    assert_eq!(inspected["owner"], json!(alice.address));
    assert_eq!(inspected["metadata"]["title"], metadata["title"]);
    assert_eq!(inspected["metadata"]["tags"], metadata["tags"]);
    assert_eq!(inspected["metadata"]["owner"], json!(alice.address));
    let owner = expect_json(
        app.inspect_v1(&id.to_lowercase(), "owner").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(owner, json!({"owner": alice.address}));

    let token = app
        .token(&alice.address, json!({"name": "download", "id": id}))
        .await;
    let downloaded = expect_json(
        app.download_v1(Some(&alice.prove(&token)), &id).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(downloaded["id"], json!(id));
    assert_eq!(downloaded["owner"], json!(alice.address));
    let bytes = hex::decode(downloaded["data"].as_str().unwrap()).unwrap();
    assert_eq!(bytes, data, "every byte value comes back intact");

    let token = app
        .token(&alice.address, json!({"name": "remove", "id": id}))
        .await;
    let response = app.remove_v1(Some(&alice.prove(&token)), &id).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    expect_code(app.inspect_v1(&id, "metadata").await, StatusCode::NOT_FOUND, "not_found").await;
    assert!(app.stored_keys().await.is_empty());
}

#[tokio::test]
async fn seed_form_round_trip_with_bare_names_and_base64url() {
    let app = spawn_app().await;
    let seed = Account::new();
    let data = random_body(1000);

    let token = app
        .token(&seed.address.to_lowercase(), json!("upload"))
        .await;
    let response = app
        .upload_v1(
            Some(&seed.prove_seed(&token)),
            &v1_body(&seed.address, json!({"k": 1}), &data),
        )
        .await;
    let id = expect_json(response, StatusCode::CREATED).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(id, format!("00000001{}", sha256_upper(&data)));

    let token = app.token(&seed.address, json!("download")).await;
    let downloaded = expect_json(
        app.download_v1(Some(&seed.prove_seed(&token)), &id).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        hex::decode(downloaded["data"].as_str().unwrap()).unwrap(),
        data
    );
    assert_eq!(downloaded["metadata"]["k"], json!(1));

    let token = app.token(&seed.address, json!("remove")).await;
    let response = app.remove_v1(Some(&seed.prove_seed(&token)), &id).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    expect_code(app.inspect_v1(&id, "owner").await, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn compressed_keys_and_der_signatures_are_accepted() {
    let app = spawn_app().await;
    let account = Account::new();
    let data = random_body(10);
    let token = app.token(&account.address, json!("upload")).await;
    let response = app
        .upload_v1(
            Some(&account.prove_compressed_der(&token)),
            &v1_body(&account.address, json!({}), &data),
        )
        .await;
    expect_json(response, StatusCode::CREATED).await;
}

#[tokio::test]
async fn an_empty_parcel_round_trips() {
    let app = spawn_app().await;
    let account = Account::new();
    let id = store_parcel(&app, &account, b"").await;
    assert_eq!(id, format!("00000001{}", sha256_upper(b"")));
    let token = app.token(&account.address, json!("download")).await;
    let downloaded = expect_json(
        app.download_v1(Some(&account.prove(&token)), &id).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(downloaded["data"], json!(""));
}

#[tokio::test]
async fn re_upload_by_the_owner_is_idempotent_and_keeps_the_metadata() {
    let app = spawn_app().await;
    let owner = Account::new();
    let data = random_body(64);
    let token = app.token(&owner.address, json!("upload")).await;
    let first = app
        .upload_v1(
            Some(&owner.prove(&token)),
            &v1_body(&owner.address, json!({"v": 1}), &data),
        )
        .await;
    let id = expect_json(first, StatusCode::CREATED).await["id"].clone();

    let token = app.token(&owner.address, json!("upload")).await;
    let again = app
        .upload_v1(
            Some(&owner.prove(&token)),
            &v1_body(&owner.address, json!({"v": 2}), &data),
        )
        .await;
    assert_eq!(expect_json(again, StatusCode::OK).await["id"], id);
    let inspected = expect_json(
        app.inspect_v1(id.as_str().unwrap(), "metadata").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(inspected["metadata"]["v"], json!(1));
    assert_eq!(app.stored_keys().await.len(), 1);
    // The successful re-upload used its token up.
    let replay = app
        .upload_v1(
            Some(&owner.prove(&token)),
            &v1_body(&owner.address, json!({}), &data),
        )
        .await;
    expect_code(replay, StatusCode::UNAUTHORIZED, "token_used").await;
}

#[tokio::test]
async fn metadata_in_any_script_round_trips() {
    let app = spawn_app().await;
    let owner = Account::new();
    let data = random_body(8);
    let token = app.token(&owner.address, json!("upload")).await;
    let metadata =
        json!({"title": "Grüße, 世界 🌍", "ctl": "\u{1}\t", "owner": owner.address.to_lowercase()});
    let response = app
        .upload_v1(
            Some(&owner.prove(&token)),
            &v1_body(&owner.address, metadata.clone(), &data),
        )
        .await;
    let id = expect_json(response, StatusCode::CREATED).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let inspected = expect_json(app.inspect_v1(&id, "metadata").await, StatusCode::OK).await;
    assert_eq!(inspected["metadata"]["title"], metadata["title"]);
    assert_eq!(inspected["metadata"]["ctl"], metadata["ctl"]);
    assert_eq!(inspected["metadata"]["owner"], json!(owner.address));
}
