//! The storefront face against a real server process.

mod support;

use serde_json::{Value, json};
use support::{SKU_A, SKU_B, SKU_C, Server, cart_cookie, client};

async fn body(r: reqwest::Response) -> Value {
    assert_eq!(r.status(), 200, "unexpected status");
    assert_eq!(r.headers()["cache-control"], "no-store");
    r.json().await.unwrap()
}

#[tokio::test]
async fn the_whole_storefront_flow() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let http = client();
    let url = |p: &str| format!("{}{p}", server.url);

    // No cookie: no cart.
    let r = http.get(url("/cart/")).send().await.unwrap();
    assert_eq!(r.status(), 404);

    // The first add creates the cart and sets the cookie. The body is sent as
    // text/plain, as browsers do.
    let r = http
        .post(url("/cart/"))
        .header("content-type", "text/plain;charset=UTF-8")
        .body(json!({"sku": SKU_A, "quantity": 1, "country": "se"}).to_string())
        .send()
        .await
        .unwrap();
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    let id = cart_cookie(&r).expect("cookie set");
    let parts: Vec<&str> = set_cookie.split("; ").collect();
    assert!(parts.contains(&"Path=/"));
    assert!(parts.contains(&"SameSite=Lax"));
    assert!(!set_cookie.to_ascii_lowercase().contains("httponly"));
    assert!(!set_cookie.to_ascii_lowercase().contains("domain"));
    let cart = body(r).await;
    assert_eq!(cart["id"], id.as_str());
    assert_eq!(cart["items"][0]["sku"], SKU_A);
    assert_eq!(cart["items"][0]["qty"], 1);
    assert_eq!(cart["totalPrice"], cart["items"][0]["price"]);

    let cookie = format!("cartid={id}");
    let send = |m: reqwest::Method, p: &str, b: Option<Value>| {
        let mut req = http.request(m, url(p)).header("cookie", cookie.clone());
        if let Some(b) = b {
            req = req.body(b.to_string());
        }
        req.send()
    };
    use reqwest::Method;

    // Same SKU again raises the quantity; /cart without slash works too.
    let r = send(Method::POST, "/cart", Some(json!({"sku": SKU_A, "quantity": 2}))).await.unwrap();
    assert!(cart_cookie(&r).is_none(), "an existing cart keeps its cookie");
    let cart = body(r).await;
    assert_eq!(cart["items"].as_array().unwrap().len(), 1);
    assert_eq!(cart["items"][0]["qty"], 3);

    // Add many at once.
    let r = send(Method::POST, "/cart/add", Some(json!({"items": [{"sku": SKU_B, "quantity": 1}, {"sku": SKU_C, "quantity": 2}], "country": "se"})))
        .await
        .unwrap();
    let cart = body(r).await;
    assert_eq!(cart["items"].as_array().unwrap().len(), 3);

    // Quantity change, 0 removes.
    let cart =
        body(send(Method::PUT, "/cart/", Some(json!({"id": 1, "quantity": 5}))).await.unwrap())
            .await;
    assert_eq!(cart["items"][0]["qty"], 5);
    let cart =
        body(send(Method::PUT, "/cart/", Some(json!({"id": 3, "quantity": 0}))).await.unwrap())
            .await;
    assert_eq!(cart["items"].as_array().unwrap().len(), 2);

    // Delivery and pickup point.
    let cart = body(
        send(
            Method::POST,
            "/cart/delivery",
            Some(json!({"provider": "postnord", "items": [1, 2], "price": 4900})),
        )
        .await
        .unwrap(),
    )
    .await;
    let delivery = &cart["deliveries"][0];
    assert_eq!(delivery["provider"], "postnord");
    assert_eq!(delivery["items"], json!([1, 2]));
    let lines: i64 = cart["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["price"].as_i64().unwrap() * l["qty"].as_i64().unwrap())
        .sum();
    assert_eq!(cart["totalPrice"].as_i64().unwrap(), lines + 4900, "total includes the delivery");
    let delivery_id = delivery["id"].as_i64().unwrap();
    let cart = body(
        send(
            Method::PUT,
            &format!("/cart/delivery/{delivery_id}/pickupPoint"),
            Some(json!({"id": "SE-123", "name": "ICA Nära", "zip": "22100", "city": null})),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(cart["deliveries"][0]["pickupPoint"]["id"], "SE-123");
    assert_eq!(cart["deliveries"][0]["pickupPoint"]["name"], "ICA Nära");

    // Remove a line: it leaves the delivery too.
    let cart = body(send(Method::DELETE, "/cart/2", None).await.unwrap()).await;
    assert_eq!(cart["deliveries"][0]["items"], json!([1]));
    let cart =
        body(send(Method::DELETE, &format!("/cart/delivery/{delivery_id}"), None).await.unwrap())
            .await;
    assert_eq!(cart["deliveries"], json!([]));

    // Unknown line and delivery: 404 with a readable text.
    let r = send(Method::DELETE, "/cart/99", None).await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.unwrap(), "no line 99 in the cart");

    // GET answers the same cart.
    let cart = body(send(Method::GET, "/cart/", None).await.unwrap()).await;
    assert_eq!(cart["items"][0]["qty"], 5);

    // Start over: the cookie is cleared; the next add makes a new cart.
    let r = send(Method::DELETE, "/cart/", None).await.unwrap();
    assert!(r.status().is_success());
    let cleared = r.headers()["set-cookie"].to_str().unwrap();
    assert!(cleared.starts_with("cartid=;") && cleared.contains("Max-Age=0"), "{cleared}");
    let r = http
        .post(url("/cart/"))
        .body(json!({"sku": SKU_B, "quantity": 1}).to_string())
        .send()
        .await
        .unwrap();
    let new_id = cart_cookie(&r).unwrap();
    assert_ne!(new_id, id);
}

#[tokio::test]
async fn errors_are_short_texts_with_the_right_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let http = client();
    let url = |p: &str| format!("{}{p}", server.url);

    let r = http
        .post(url("/cart/"))
        .body(json!({"sku": "no-such-sku", "quantity": 1}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.unwrap(), "unknown sku no-such-sku");

    let r = http
        .post(url("/cart/"))
        .body(json!({"sku": "999001", "quantity": 1}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.text().await.unwrap(), "999001 is not for sale");

    let r = http
        .post(url("/cart/"))
        .body(json!({"sku": SKU_A, "country": "fi"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("unknown country"));

    // Mutating without a cart: 404, no cookie issued.
    let r = http
        .put(url("/cart/"))
        .body(json!({"id": 1, "quantity": 2}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(cart_cookie(&r).is_none());

    // A cart in NOK refuses a SEK item.
    let r = http
        .post(url("/cart/"))
        .body(json!({"sku": SKU_A, "country": "no"}).to_string())
        .send()
        .await
        .unwrap();
    let id = cart_cookie(&r).unwrap();
    let cart: Value = r.json().await.unwrap();
    assert_eq!(cart["currency"], "NOK");
    let r = http
        .post(url("/cart/"))
        .header("cookie", format!("cartid={id}"))
        .body(json!({"sku": SKU_B, "country": "se"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_adds_to_one_cart_lose_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let http = client();
    let cookie = support::new_shopper(&server).await;
    let skus = [SKU_A, SKU_B, SKU_C];
    let mut tasks = Vec::new();
    for i in 0..60 {
        let http = http.clone();
        let url = format!("{}/cart/", server.url);
        let cookie = cookie.clone();
        let sku = skus[i % 3];
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .header("cookie", cookie)
                .body(json!({"sku": sku, "quantity": 1}).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let cart: Value = http
        .get(format!("{}/cart/", server.url))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(support::qty(&cart), 61);
    assert_eq!(cart["version"], 61);
}
