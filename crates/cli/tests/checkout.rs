//! Klarna Checkout against the fake provider, through a real server process.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::klarna::{FakeKlarna, PASSWORD, USER};
use support::{SKU_A, SKU_B, Server, cart_cookie, client};

const PUBLIC: &str = "http://shop.test";

struct Shop {
    server: Server,
    cookie: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Shop {
    /// A server wired to `klarna`, and a shopper with two products and a
    /// delivery in the cart.
    async fn start(klarna: &FakeKlarna, password: &str) -> Shop {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(
            dir.path(),
            &[
                "--klarna-url",
                &klarna.url,
                "--klarna-username",
                USER,
                "--klarna-password",
                password,
                "--public-url",
                PUBLIC,
            ],
        );
        let http = client();
        let r = http
            .post(format!("{}/cart/", server.url))
            .body(json!({"sku": SKU_A, "quantity": 2}).to_string())
            .send()
            .await
            .unwrap();
        let cookie = format!("cartid={}", cart_cookie(&r).unwrap());
        let shop = Shop { server, cookie, http, _dir: dir };
        assert_eq!(
            shop.send(Method::POST, "/cart/", Some(json!({"sku": SKU_B}))).await.status(),
            200
        );
        let r = shop
            .send(
                Method::POST,
                "/cart/delivery",
                Some(json!({"provider": "postnord", "items": [1], "price": 4900})),
            )
            .await;
        assert_eq!(r.status(), 200);
        shop
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> reqwest::Response {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.server.url))
            .header("cookie", &self.cookie);
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        req.send().await.unwrap()
    }

    async fn cart(&self) -> Value {
        self.send(Method::GET, "/cart/", None).await.json().await.unwrap()
    }

    async fn checkout(&self) -> Value {
        let r = self.send(Method::GET, "/cart/checkout", None).await;
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
        r.json().await.unwrap()
    }

    async fn post_url(&self, path: &str, body: Vec<u8>) -> reqwest::Response {
        let no_redirects =
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        no_redirects.post(format!("{}{path}", self.server.url)).body(body).send().await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_checkout_flow_completes_the_cart_exactly_once() {
    let klarna = FakeKlarna::start().await;
    let shop = Shop::start(&klarna, PASSWORD).await;

    let order = shop.checkout().await;
    let id = order["order_id"].as_str().unwrap().to_owned();
    assert!(order["html_snippet"].as_str().unwrap().contains("klarna-checkout-container"));
    let cart = shop.cart().await;
    assert_eq!(cart["paymentInProgress"], true);
    assert_eq!(cart["orderReference"], id.as_str());
    // The order is exactly the cart: lines, shipping, totals, references.
    assert_eq!(order["order_amount"], cart["totalPrice"]);
    assert_eq!(order["order_tax_amount"], cart["totalTax"]);
    assert_eq!(order["merchant_reference1"], cart["id"]);
    assert_eq!(order["order_lines"][2]["type"], "shipping_fee");
    assert_eq!(
        order["merchant_urls"]["confirmation"],
        format!("{PUBLIC}/confirmation/{{checkout.order.id}}")
    );
    assert_eq!(order["purchase_currency"], "SEK");

    // Reading again reuses the order.
    assert_eq!(shop.checkout().await["order_id"], id.as_str());
    assert_eq!(klarna.counts(), (1, 0, 0));

    // The amount is locked during checkout...
    let locked = shop.send(Method::POST, "/cart/", Some(json!({"sku": SKU_B}))).await;
    assert_eq!(locked.status(), 409);
    assert!(locked.text().await.unwrap().contains("checkout is in progress"));
    // ...until the shopper leaves checkout to change the cart.
    let left: Value = shop.send(Method::DELETE, "/cart/checkout", None).await.json().await.unwrap();
    assert_eq!(left["paymentInProgress"], false);
    assert_eq!(shop.send(Method::POST, "/cart/", Some(json!({"sku": SKU_B}))).await.status(), 200);
    // Back in checkout: the same order, updated to the new cart.
    let updated = shop.checkout().await;
    assert_eq!(updated["order_id"], id.as_str());
    assert_eq!(klarna.counts(), (1, 1, 0));
    let cart = shop.cart().await;
    assert_eq!(updated["order_amount"], cart["totalPrice"]);
    assert_eq!(cart["paymentInProgress"], true);

    // Klarna validates before the purchase: the order still matches.
    let valid =
        shop.post_url("/klarna/validate", serde_json::to_vec(&klarna.order(&id)).unwrap()).await;
    assert_eq!(valid.status(), 200);

    klarna.complete(&id);
    let confirmation: Value = shop
        .send(Method::GET, &format!("/cart/confirmation/{id}"), None)
        .await
        .json()
        .await
        .unwrap();
    assert!(confirmation["html_snippet"].as_str().unwrap().contains("klarna-confirmation"));
    let push = shop.post_url(&format!("/klarna/push?order_id={id}"), vec![]).await;
    assert_eq!(push.status(), 200);
    let cart = shop.cart().await;
    assert_eq!(cart["paymentStatus"], "checkout_completed");
    assert_eq!(cart["paymentInProgress"], false);
    assert_eq!(klarna.counts().2, 1, "acknowledged once");
    let version = cart["version"].clone();

    // Klarna retries the push: nothing changes, no second acknowledgement.
    assert_eq!(shop.post_url(&format!("/klarna/push?order_id={id}"), vec![]).await.status(), 200);
    assert_eq!(klarna.counts().2, 1);
    assert_eq!(shop.cart().await["version"], version);
    // The paid cart stays as it was paid.
    assert_eq!(shop.send(Method::POST, "/cart/", Some(json!({"sku": SKU_A}))).await.status(), 409);

    // The HTML pages embed the snippet and re-run its scripts.
    let page = shop.send(Method::GET, "/checkout", None).await.text().await.unwrap();
    assert!(
        page.contains("checkout-container")
            && page.contains("/cart/checkout")
            && page.contains("createElement(\"script\")")
    );
    let page =
        shop.send(Method::GET, &format!("/confirmation/{id}"), None).await.text().await.unwrap();
    assert!(page.contains("/cart/confirmation/"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_refuses_an_order_that_no_longer_matches_the_cart() {
    let klarna = FakeKlarna::start().await;
    let shop = Shop::start(&klarna, PASSWORD).await;
    let id = shop.checkout().await["order_id"].as_str().unwrap().to_owned();
    let order_before = serde_json::to_vec(&klarna.order(&id)).unwrap();
    // Another tab: the shopper leaves checkout and changes the cart.
    shop.send(Method::DELETE, "/cart/checkout", None).await;
    assert_eq!(shop.send(Method::POST, "/cart/", Some(json!({"sku": SKU_A}))).await.status(), 200);
    let r = shop.post_url("/klarna/validate", order_before).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], format!("{PUBLIC}/checkout").as_str());
    let garbage = shop.post_url("/klarna/validate", b"{not json".to_vec()).await;
    assert_eq!(garbage.status(), 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn klarna_down_is_a_clear_502_and_nothing_is_persisted() {
    let klarna = FakeKlarna::start().await;
    let shop = Shop::start(&klarna, PASSWORD).await;
    let before = shop.cart().await;
    klarna.set_down(true);
    let r = shop.send(Method::GET, "/cart/checkout", None).await;
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().contains("payment provider"));
    assert_eq!(shop.cart().await, before, "nothing persisted");
    klarna.set_down(false);
    let order = shop.checkout().await;
    assert_eq!(shop.cart().await["orderReference"], order["order_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_a_502_not_a_crash() {
    let klarna = FakeKlarna::start().await;
    let shop = Shop::start(&klarna, "wrong").await;
    let r = shop.send(Method::GET, "/cart/checkout", None).await;
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().contains("401"));
    assert_eq!(klarna.counts(), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_order_is_replaced_by_a_new_one() {
    let klarna = FakeKlarna::start().await;
    let shop = Shop::start(&klarna, PASSWORD).await;
    let first = shop.checkout().await["order_id"].as_str().unwrap().to_owned();
    klarna.expire(&first);
    let second = shop.checkout().await["order_id"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    assert_eq!(shop.cart().await["orderReference"], second.as_str());
    assert_eq!(klarna.counts().0, 2);
    // A push for the expired order completes nothing.
    assert_eq!(
        shop.post_url(&format!("/klarna/push?order_id={first}"), vec![]).await.status(),
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_whose_amount_differs_from_the_cart_does_not_complete_it() {
    let klarna = FakeKlarna::start().await;
    let shop = Shop::start(&klarna, PASSWORD).await;
    let id = shop.checkout().await["order_id"].as_str().unwrap().to_owned();
    klarna.tamper_amount(&id, 1);
    klarna.complete(&id);
    let r = shop.post_url(&format!("/klarna/push?order_id={id}"), vec![]).await;
    assert_eq!(r.status(), 409);
    let cart = shop.cart().await;
    assert_ne!(cart["paymentStatus"], "checkout_completed");
    assert_eq!(klarna.counts().2, 0, "not acknowledged");
    // A push that does not name an order is a clear 400.
    assert_eq!(shop.post_url("/klarna/push", vec![]).await.status(), 400);
}

/// The attack: build the order, leave checkout, add ten more items, let the
/// provider complete the old (smaller) order, push. The cart must not be
/// completed with contents nobody paid for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_for_an_order_older_than_the_cart_completes_nothing_and_cancels_it() {
    let klarna = FakeKlarna::start().await;
    let shop = Shop::start(&klarna, PASSWORD).await;
    let order = shop.checkout().await;
    let id = order["order_id"].as_str().unwrap().to_owned();
    let paid = order["order_amount"].as_i64().unwrap();
    assert_eq!(shop.send(Method::DELETE, "/cart/checkout", None).await.status(), 200);
    let bigger =
        shop.send(Method::POST, "/cart/", Some(json!({"sku": SKU_A, "quantity": 10}))).await;
    assert_eq!(bigger.status(), 200);
    klarna.complete(&id);
    // Editing, and then even back in checkout with the same amount rebuilt:
    // neither completes with the old order.
    let push = shop.post_url(&format!("/klarna/push?order_id={id}"), vec![]).await;
    assert_eq!(push.status(), 409);
    let cart = shop.cart().await;
    assert_ne!(cart["paymentStatus"], "checkout_completed");
    assert!(cart["totalPrice"].as_i64().unwrap() > paid);
    assert_eq!(klarna.counts().2, 0, "nothing acknowledged");
    assert_eq!(klarna.cancelled(), 1, "the stale order is cancelled");
    // The confirmation page does not complete it either.
    let confirmation = shop.send(Method::GET, &format!("/cart/confirmation/{id}"), None).await;
    assert_eq!(confirmation.status(), 200);
    assert_ne!(shop.cart().await["paymentStatus"], "checkout_completed");
    // Going back to checkout makes a new order for the cart as it is.
    let fresh = shop.checkout().await;
    assert_ne!(fresh["order_id"], id.as_str());
    assert_eq!(fresh["order_amount"], shop.cart().await["totalPrice"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushes_complete_and_acknowledge_once() {
    let klarna = FakeKlarna::start().await;
    let shop = Shop::start(&klarna, PASSWORD).await;
    let id = shop.checkout().await["order_id"].as_str().unwrap().to_owned();
    klarna.complete(&id);
    let push = format!("/klarna/push?order_id={id}");
    let pushes = (0..12).map(|_| shop.post_url(&push, vec![]));
    let answers = futures_util::future::join_all(pushes).await;
    assert!(
        answers.iter().all(|r| r.status() == 200),
        "{:?}",
        answers.iter().map(reqwest::Response::status).collect::<Vec<_>>()
    );
    assert_eq!(klarna.counts().2, 1, "acknowledged once");
    let cart = shop.cart().await;
    assert_eq!(cart["paymentStatus"], "checkout_completed");
    assert_eq!(klarna.cancelled(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_confirmation_is_only_for_the_carts_shopper_and_holds_no_personal_data() {
    let klarna = FakeKlarna::start().await;
    let shop = Shop::start(&klarna, PASSWORD).await;
    let id = shop.checkout().await["order_id"].as_str().unwrap().to_owned();
    klarna.complete(&id);
    let path = format!("/cart/confirmation/{id}");
    let mine: Value = shop.send(Method::GET, &path, None).await.json().await.unwrap();
    assert!(mine["html_snippet"].as_str().unwrap().contains("klarna-confirmation"));
    let keys: Vec<&String> = mine.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["html_snippet", "order_id", "status"], "only what the page needs");
    let anonymous = shop.http.get(format!("{}{path}", shop.server.url)).send().await.unwrap();
    assert_eq!(anonymous.status(), 404);
    let other = shop
        .http
        .post(format!("{}/cart/", shop.server.url))
        .body(json!({"sku": SKU_A}).to_string())
        .send()
        .await
        .unwrap();
    let other = format!("cartid={}", cart_cookie(&other).unwrap());
    let theirs = shop
        .http
        .get(format!("{}{path}", shop.server.url))
        .header("cookie", other)
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 404, "another shopper cannot read it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_klarna_password_can_come_from_a_file() {
    let klarna = FakeKlarna::start().await;
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("klarna-password");
    std::fs::write(&password, format!("{PASSWORD}\n")).unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--klarna-url",
            &klarna.url,
            "--klarna-username",
            USER,
            "--klarna-password-file",
            password.to_str().unwrap(),
            "--public-url",
            PUBLIC,
        ],
    );
    let http = client();
    let cookie = support::new_shopper(&server).await;
    let order = http
        .get(format!("{}/cart/checkout", server.url))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(order.status(), 200, "the fake accepts only the right password");
    assert_eq!(klarna.counts().0, 1);
}
