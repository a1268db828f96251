//! Issue 7: a buyer downloads what the AMO blockchain says it bought; issue
//! 13: against the amoabci nodes that run today. A fake node
//! ([`crate::fake_chain`]) answers as amoabci's `queryUsage`; Redis and Ceph
//! are the real ones.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::{
    fake_chain::{Answer, Dialect, FakeChain, Query, ZERO_ADDRESS, unreachable_url},
    helpers::*,
};

/// A fake node, a replica that asks it, and a parcel of `owner` that `buyer`
/// has not bought yet.
struct Market {
    fake: FakeChain,
    app: TestApp,
    owner: Account,
    buyer: Account,
    data: Vec<u8>,
    id: String,
}

impl Market {
    /// Opens a market whose replica has these settings besides
    /// `AMO_CHAIN_RPC`.
    async fn open(extra: &[(&str, &str)]) -> Self {
        Self::open_on(FakeChain::start().await, extra).await
    }

    /// Opens a market on `fake`.
    async fn open_on(fake: FakeChain, extra: &[(&str, &str)]) -> Self {
        let mut overrides = vec![("AMO_CHAIN_RPC", fake.url.as_str())];
        overrides.extend_from_slice(extra);
        let app = spawn_with(settings(&overrides)).await;
        let (owner, buyer) = (Account::new(), Account::new());
        let data = random_body(64);
        let id = store_parcel(&app, &owner, &data).await;
        Self {
            fake,
            app,
            owner,
            buyer,
            data,
            id,
        }
    }

    /// The buyer buys the parcel, on the fake chain.
    fn sell(&self) {
        self.fake.grant(&self.buyer.address, &self.id);
    }

    /// The proof headers of a new download token of `account` for `id`.
    async fn download_proof(&self, account: &Account, id: &str) -> (String, Proof) {
        let token = download_token(&self.app, account, id).await;
        let proof = account.prove(&token);
        (token, proof)
    }

    /// The `/usage` query for the buyer and `id`, with the default key.
    fn usage(&self, id: &str) -> Query {
        usage(&self.buyer, id)
    }

    /// Asserts that a v1 download with `proof` answers the parcel.
    async fn downloads_v1(&self, proof: &Proof) {
        let response = self.app.download_v1(Some(proof), &self.id).await;
        let body = expect_json(response, StatusCode::OK).await;
        assert_eq!(body["data"], hex::encode_upper(&self.data));
        assert_eq!(body["owner"], self.owner.address.as_str());
    }

    /// Asserts that v1 and v2 downloads with `proof` of the parcel `id` answer
    /// `status` and leave the token `token` usable.
    async fn both_refused(
        &self,
        token: &str,
        proof: &Proof,
        id: &str,
        status: StatusCode,
    ) -> String {
        let v1 = expect_error(self.app.download_v1(Some(proof), id).await, status).await;
        let v2 = expect_error(self.app.download_v2(Some(proof), id, None).await, status).await;
        assert_eq!(v1, v2);
        assert_eq!(
            self.app.token_record(token).await.as_deref(),
            Some("issued")
        );
        v1
    }
}

/// A download token of `account` for parcel `id`.
async fn download_token(app: &TestApp, account: &Account, id: &str) -> String {
    app.token(&account.address, json!({"name": "download", "id": id}))
        .await
}

/// The `/usage` query for `buyer` and `id`, with the default key.
fn usage(buyer: &Account, id: &str) -> Query {
    Query::usage("recipient", &buyer.address, id)
}

#[tokio::test]
async fn a_granted_buyer_downloads_through_v1_and_v2() {
    let market = Market::open(&[("AMO_CHAIN_CACHE_SECS", "0")]).await;
    let (app, buyer, id, data) = (&market.app, &market.buyer, &market.id, &market.data);
    market.sell();

    let (token, proof) = market.download_proof(buyer, id).await;
    market.downloads_v1(&proof).await;
    assert_eq!(
        app.token_record(&token).await,
        None,
        "a download uses its token"
    );

    let (_, proof) = market.download_proof(buyer, id).await;
    let response = app.download_v2(Some(&proof), id, Some("bytes=10-19")).await;
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(response.bytes().await.unwrap(), data[10..20]);
    assert_eq!(&app.fetch_v2(buyer, id).await, data);

    // One query per download (the cache is off), each naming buyer and parcel.
    assert_eq!(market.fake.queries(), vec![market.usage(id); 3]);
}

#[tokio::test]
async fn a_buyer_without_a_grant_is_refused_and_the_refusal_is_not_cached() {
    let market = Market::open(&[]).await;
    let (token, proof) = market.download_proof(&market.buyer, &market.id).await;
    let code = market
        .both_refused(&token, &proof, &market.id, StatusCode::FORBIDDEN)
        .await;
    assert_eq!(code, "forbidden");
    assert_eq!(
        market.fake.queries().len(),
        2,
        "a refusal is not remembered"
    );

    // The purchase lands on the chain: the same token works at once.
    market.sell();
    market.downloads_v1(&proof).await;
    assert_eq!(market.fake.queries(), vec![market.usage(&market.id); 3]);
}

#[tokio::test]
async fn a_grant_for_another_parcel_or_another_account_does_not_count() {
    let market = Market::open(&[]).await;
    market.sell();
    let other = store_parcel(&market.app, &market.owner, &random_body(21)).await;

    let (token, proof) = market.download_proof(&market.buyer, &other).await;
    market
        .both_refused(&token, &proof, &other, StatusCode::FORBIDDEN)
        .await;
    assert_eq!(market.fake.queries(), vec![market.usage(&other); 2]);

    let stranger = Account::new();
    let (token, proof) = market.download_proof(&stranger, &market.id).await;
    market
        .both_refused(&token, &proof, &market.id, StatusCode::FORBIDDEN)
        .await;
    assert_eq!(
        market.fake.queries().last(),
        Some(&usage(&stranger, &market.id))
    );
}

/// With a node that answers `answer`, a granted buyer's downloads (v1 and v2)
/// answer `status` with `code`, send nothing, and leave the token usable:
/// once the node answers as amoabci does, the same token downloads (so
/// nothing was remembered).
async fn refused_while_the_node_answers(answer: Answer, status: StatusCode, code: &str) {
    let market = Market::open(&[("AMO_CHAIN_TIMEOUT_MS", "300")]).await;
    market.sell();
    market.fake.answer(answer.clone());

    let (token, proof) = market.download_proof(&market.buyer, &market.id).await;
    let answered = market
        .both_refused(&token, &proof, &market.id, status)
        .await;
    assert_eq!(answered, code, "{answer:?}");

    market.fake.answer(Answer::AsTheNode);
    market.downloads_v1(&proof).await;
    assert_eq!(
        market.fake.queries(),
        vec![market.usage(&market.id); 3],
        "{answer:?}"
    );
}

/// A node answering `answer` is a 502 `chain_unavailable`, never a grant.
async fn a_failing_node_never_grants(answer: Answer) {
    refused_while_the_node_answers(answer, StatusCode::BAD_GATEWAY, "chain_unavailable").await;
}

/// A node answering `answer` is a 403, not a grant.
async fn not_granted_when_the_node_answers(answer: Answer) {
    refused_while_the_node_answers(answer, StatusCode::FORBIDDEN, "forbidden").await;
}

#[tokio::test]
async fn a_json_rpc_error_never_grants() {
    a_failing_node_never_grants(Answer::RpcError).await;
}

#[tokio::test]
async fn a_refused_query_never_grants() {
    // amoabci's BadPath, NoKey and BadKey; an old BadKey; a code amoabci
    // never answers to a query.
    for code in [1002, 1003, 1004, 3, 1000] {
        a_failing_node_never_grants(Answer::Code(code)).await;
    }
}

#[tokio::test]
async fn a_node_slower_than_the_timeout_never_grants() {
    a_failing_node_never_grants(Answer::Slow(Duration::from_secs(10))).await;
}

#[tokio::test]
async fn garbage_from_the_node_never_grants() {
    a_failing_node_never_grants(Answer::Garbage).await;
}

#[tokio::test]
async fn a_status_other_than_200_never_grants() {
    a_failing_node_never_grants(Answer::Status(500)).await;
    a_failing_node_never_grants(Answer::Status(301)).await;
}

#[tokio::test]
async fn an_unreachable_node_never_grants() {
    let app = spawn_with(settings(&[
        ("AMO_CHAIN_RPC", &unreachable_url()),
        ("AMO_CHAIN_TIMEOUT_MS", "300"),
    ]))
    .await;
    let (owner, buyer) = (Account::new(), Account::new());
    let id = store_parcel(&app, &owner, &random_body(30)).await;

    let token = download_token(&app, &buyer, &id).await;
    let proof = buyer.prove(&token);
    for response in [
        app.download_v1(Some(&proof), &id).await,
        app.download_v2(Some(&proof), &id, None).await,
    ] {
        let code = expect_error(response, StatusCode::BAD_GATEWAY).await;
        assert_eq!(code, "chain_unavailable");
        assert_eq!(app.token_record(&token).await.as_deref(), Some("issued"));
    }
}

#[tokio::test]
async fn with_no_chain_configured_only_the_owner_downloads() {
    // A market whose replica does not know the node: empty is unset.
    let market = Market::open(&[("AMO_CHAIN_RPC", "")]).await;
    market.sell();

    let (token, proof) = market.download_proof(&market.buyer, &market.id).await;
    market
        .both_refused(&token, &proof, &market.id, StatusCode::FORBIDDEN)
        .await;
    assert_eq!(
        market.app.fetch_v2(&market.owner, &market.id).await,
        market.data
    );
    assert!(market.fake.queries().is_empty());
}

#[tokio::test]
async fn remove_stays_owner_only_even_for_a_granted_buyer() {
    let market = Market::open(&[]).await;
    let (app, buyer, id) = (&market.app, &market.buyer, &market.id);
    market.sell();

    let token = app
        .token(&buyer.address, json!({"name": "remove", "id": id}))
        .await;
    let proof = buyer.prove(&token);
    for response in [
        app.remove_v1(Some(&proof), id).await,
        app.remove_v2(Some(&proof), id).await,
    ] {
        assert_eq!(
            expect_error(response, StatusCode::FORBIDDEN).await,
            "forbidden"
        );
    }
    assert_eq!(app.token_record(&token).await.as_deref(), Some("issued"));
    assert!(
        market.fake.queries().is_empty(),
        "remove never asks the chain"
    );
    // The parcel is still there, and the grant is real: the buyer downloads.
    assert_eq!(app.fetch_v2(buyer, id).await, market.data);
    assert_eq!(market.fake.queries(), vec![market.usage(id)]);
}

#[tokio::test]
async fn the_owner_never_asks_the_chain() {
    let market = Market::open(&[("AMO_CHAIN_CACHE_SECS", "0")]).await;
    // Any query would fail the download: the owner's must not make one.
    market.fake.answer(Answer::Garbage);

    let (_, proof) = market.download_proof(&market.owner, &market.id).await;
    market.downloads_v1(&proof).await;
    assert_eq!(
        market.app.fetch_v2(&market.owner, &market.id).await,
        market.data
    );
    assert!(market.fake.queries().is_empty());
}

#[tokio::test]
async fn a_grant_is_remembered_by_each_replica_for_its_ttl() {
    let market = Market::open(&[]).await;
    let (first, buyer, id) = (&market.app, &market.buyer, &market.id);
    let second = spawn_beside(first, first.settings.clone()).await;
    let other = store_parcel(first, &market.owner, &random_body(91)).await;
    market.sell();

    let (_, proof) = market.download_proof(buyer, id).await;
    market.downloads_v1(&proof).await;
    assert_eq!(first.fetch_v2(buyer, id).await, market.data);
    assert_eq!(
        market.fake.queries().len(),
        1,
        "the second download used the cache"
    );

    // The grant names one parcel: another one is asked about, and refused.
    let (_, proof) = market.download_proof(buyer, &other).await;
    expect_error(
        first.download_v1(Some(&proof), &other).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    // Each replica has its own cache.
    assert_eq!(second.fetch_v2(buyer, id).await, market.data);
    assert_eq!(
        market.fake.queries(),
        vec![market.usage(id), market.usage(&other), market.usage(id)]
    );
}

#[tokio::test]
async fn the_buyer_can_be_named_recipient_in_the_query() {
    let market = Market::open(&[("AMO_CHAIN_USAGE_KEY", "recipient")]).await;
    market.sell();

    let (_, proof) = market.download_proof(&market.buyer, &market.id).await;
    market.downloads_v1(&proof).await;
    assert_eq!(
        market.fake.queries(),
        vec![Query::usage("recipient", &market.buyer.address, &market.id)]
    );
}

#[tokio::test]
async fn code_zero_with_no_value_is_not_a_grant() {
    not_granted_when_the_node_answers(Answer::NoValue).await;
}

#[tokio::test]
async fn a_value_that_is_not_a_usage_never_grants() {
    // Code 0 with JSON that is not amoabci's UsageEx: the node failed.
    for value in ["false", "0", "{}", "[]", r#"{"custody":"C0FFEE","extra":{}}"#] {
        a_failing_node_never_grants(Answer::Value(value.into())).await;
    }
    // A usage without the echoed query key names no parcel.
    a_failing_node_never_grants(Answer::Key(None)).await;
    a_failing_node_never_grants(Answer::Key(Some("{}".into()))).await;
}

#[tokio::test]
async fn a_usage_of_another_recipient_or_parcel_is_not_a_grant() {
    let stranger = Account::new();
    let usage = format!(
        r#"{{"custody":"C0FFEE","extra":{{}},"recipient":"{}"}}"#,
        stranger.address
    );
    not_granted_when_the_node_answers(Answer::Value(usage)).await;
    let elsewhere = format!("00000001{}", "CD".repeat(32));
    let key = format!(r#"{{"recipient":"{ZERO_ADDRESS}","target":"{elsewhere}"}}"#);
    not_granted_when_the_node_answers(Answer::Key(Some(key))).await;
}

#[tokio::test]
async fn nodes_before_v1_7_are_asked_with_buyer_when_set() {
    // amoabci v1.5.4 to v1.6.x: `buyer`, offset codes.
    let fake = FakeChain::start_as(Dialect::Buyer).await;
    let market = Market::open_on(fake, &[("AMO_CHAIN_USAGE_KEY", "buyer")]).await;
    let (token, proof) = market.download_proof(&market.buyer, &market.id).await;
    market
        .both_refused(&token, &proof, &market.id, StatusCode::FORBIDDEN)
        .await;
    market.sell();
    market.downloads_v1(&proof).await;
    let query = Query::usage("buyer", &market.buyer.address, &market.id);
    assert_eq!(market.fake.queries(), vec![query; 3]);
    assert_eq!(probe_outcome(&market).await, "dialect");
}

#[tokio::test]
async fn the_legacy_no_match_4_is_not_a_grant() {
    // amoabci before v1.5.4: `buyer`, codes without the offset.
    let fake = FakeChain::start_as(Dialect::Legacy).await;
    let market = Market::open_on(fake, &[("AMO_CHAIN_USAGE_KEY", "buyer")]).await;
    let (token, proof) = market.download_proof(&market.buyer, &market.id).await;
    let code = market
        .both_refused(&token, &proof, &market.id, StatusCode::FORBIDDEN)
        .await;
    assert_eq!(code, "forbidden");
    market.sell();
    market.downloads_v1(&proof).await;
    assert_eq!(probe_outcome(&market).await, "dialect");
}

#[tokio::test]
async fn a_wrong_usage_key_is_bad_key_a_502_and_the_probe_says_so() {
    // The default `recipient` against a node that expects `buyer`, and the
    // other way round: the node answers 1004 to every query.
    for (dialect, setting) in [(Dialect::Buyer, None), (Dialect::Current, Some("buyer"))] {
        let fake = FakeChain::start_as(dialect).await;
        let extra: Vec<(&str, &str)> = setting
            .map(|key| ("AMO_CHAIN_USAGE_KEY", key))
            .into_iter()
            .collect();
        let market = Market::open_on(fake, &extra).await;
        market.sell();
        let (token, proof) = market.download_proof(&market.buyer, &market.id).await;
        let code = market
            .both_refused(&token, &proof, &market.id, StatusCode::BAD_GATEWAY)
            .await;
        assert_eq!(code, "chain_unavailable", "{dialect:?}");
        assert_eq!(probe_outcome(&market).await, "wrong_usage_key", "{dialect:?}");
        // Owners still download, and the replica is ready.
        assert_eq!(
            market.app.fetch_v2(&market.owner, &market.id).await,
            market.data
        );
        expect_json(market.app.get("/readyz").await, StatusCode::OK).await;
    }
}

/// The outcome the start-up probe of `market`'s replica recorded in
/// `amo_chain_probe`, once it has one.
async fn probe_outcome(market: &Market) -> String {
    probe_outcome_of(&market.app, &market.fake.url).await
}

/// The outcome of the probe of `node` in `app`'s metrics, once there is one.
async fn probe_outcome_of(app: &TestApp, node: &str) -> String {
    let prefix = format!(r#"amo_chain_probe{{node="{node}",outcome=""#);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = app.get("/metrics").await.text().await.unwrap();
        let found = text.lines().find_map(|line| {
            let outcome = line.strip_prefix(prefix.as_str())?.strip_suffix("\"} 1")?;
            Some(outcome.to_owned())
        });
        if let Some(outcome) = found {
            return outcome;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no outcome of the probe of {node} in the metrics"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_probe_asks_for_an_impossible_usage_and_finds_the_dialect() {
    let market = Market::open(&[]).await;
    assert_eq!(probe_outcome(&market).await, "dialect");
    let zero_parcel = "0".repeat(72);
    assert_eq!(
        market.fake.probes(),
        vec![Query::usage("recipient", ZERO_ADDRESS, &zero_parcel)]
    );
    assert!(market.fake.queries().is_empty());
}

#[tokio::test]
async fn an_unreachable_node_at_start_is_a_warning_and_the_replica_serves() {
    let node = unreachable_url();
    let app = spawn_with(settings(&[
        ("AMO_CHAIN_RPC", &node),
        ("AMO_CHAIN_TIMEOUT_MS", "300"),
    ]))
    .await;
    assert_eq!(probe_outcome_of(&app, &node).await, "unreachable");
    expect_json(app.get("/readyz").await, StatusCode::OK).await;
    let owner = Account::new();
    let data = random_body(40);
    let id = store_parcel(&app, &owner, &data).await;
    assert_eq!(app.fetch_v2(&owner, &id).await, data);
}

#[tokio::test]
async fn credentials_in_the_rpc_url_are_sent_but_never_shown() {
    let fake = FakeChain::start().await;
    let with_credentials = fake.url.replacen("http://", "http://alice:s3cret@", 1);
    let shown = fake.url.replacen("http://", "http://***@", 1);
    let market = Market::open_on(fake, &[("AMO_CHAIN_RPC", &with_credentials)]).await;
    market.sell();
    let (_, proof) = market.download_proof(&market.buyer, &market.id).await;
    market.downloads_v1(&proof).await;
    assert_eq!(probe_outcome_of(&market.app, &shown).await, "dialect");
    let metrics = market.app.get("/metrics").await.text().await.unwrap();
    assert!(!metrics.contains("s3cret"));
}

#[tokio::test]
async fn an_unknown_parcel_is_404_and_the_chain_is_never_asked() {
    let market = Market::open(&[]).await;
    let unknown = format!(
        "{}{}",
        market.app.settings.storage_id,
        sha256_upper(&random_body(16))
    );
    market.sell();
    market.fake.grant(&market.buyer.address, &unknown);

    let (token, proof) = market.download_proof(&market.buyer, &unknown).await;
    let code = market
        .both_refused(&token, &proof, &unknown, StatusCode::NOT_FOUND)
        .await;
    assert_eq!(code, "not_found");
    assert!(market.fake.queries().is_empty(), "the chain was asked");
}

#[tokio::test]
async fn a_remove_forgets_the_cached_grants_of_the_parcel() {
    let market = Market::open(&[]).await;
    let (app, owner, buyer, id) = (&market.app, &market.owner, &market.buyer, &market.id);
    market.sell();
    assert_eq!(app.fetch_v2(buyer, id).await, market.data);
    // The grant is taken back on the chain, but this replica remembers it.
    market.fake.revoke(&buyer.address, id);
    assert_eq!(app.fetch_v2(buyer, id).await, market.data);
    assert_eq!(market.fake.queries().len(), 1, "the cache answered");

    // The owner removes the parcel and stores the same content again.
    let token = app
        .token(&owner.address, json!({"name": "remove", "id": id}))
        .await;
    let removed = app.remove_v2(Some(&owner.prove(&token)), id).await;
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    assert_eq!(&store_parcel(app, owner, &market.data).await, id);

    // The chain is asked anew, and says no.
    let (token, proof) = market.download_proof(buyer, id).await;
    market
        .both_refused(&token, &proof, id, StatusCode::FORBIDDEN)
        .await;
    assert_eq!(market.fake.queries(), vec![market.usage(id); 3]);
}

#[tokio::test]
async fn a_grant_cached_for_one_owner_never_serves_another_owners_parcel() {
    let market = Market::open(&[]).await;
    let (first, owner, buyer, id) = (&market.app, &market.owner, &market.buyer, &market.id);
    let second = spawn_beside(first, first.settings.clone()).await;
    market.sell();
    assert_eq!(second.fetch_v2(buyer, id).await, market.data);
    market.fake.revoke(&buyer.address, id);

    // Removed through the first replica: the second one still remembers
    // the grant. Another owner stores the same content.
    let token = first
        .token(&owner.address, json!({"name": "remove", "id": id}))
        .await;
    let removed = first.remove_v2(Some(&owner.prove(&token)), id).await;
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    let other_owner = Account::new();
    assert_eq!(&store_parcel(first, &other_owner, &market.data).await, id);

    let token = download_token(&second, buyer, id).await;
    let proof = buyer.prove(&token);
    let refused = second.download_v2(Some(&proof), id, None).await;
    assert_eq!(
        expect_error(refused, StatusCode::FORBIDDEN).await,
        "forbidden"
    );
    assert_eq!(market.fake.queries(), vec![market.usage(id); 2]);
}
