//! The benchmark's typical 1 KB form-encoded PaymentIntent request, shared by what drives the
//! engine with it: `benches/inspect.rs` times it with criterion, `examples/profile.rs` counts
//! its instructions, `examples/tail.rs` times consecutive inspections.

use pay_waf::HttpRequest;

/// The form body: a confirmed PaymentIntent with shipping details, padded to 1 KB with
/// metadata lines.
pub fn body() -> String {
    let mut body = String::from(
        "amount=2000&currency=usd&payment_method=pm_1Q2w3E4r5T6y7U8i9O0p&confirm=true&capture_method=automatic\
         &description=Order+%231234+-+2x+T-shirt+%28size%3A+M%2FL%29&receipt_email=jenny.rosen%40example.com\
         &statement_descriptor_suffix=ORDER+1234&shipping%5Bname%5D=Jenny+Rosen\
         &shipping%5Baddress%5D%5Bline1%5D=12+O%27Connell+St%2C+Apt+%234&shipping%5Baddress%5D%5Bcity%5D=Dublin\
         &shipping%5Baddress%5D%5Bpostal_code%5D=D01+F5P2&shipping%5Baddress%5D%5Bcountry%5D=IE\
         &expand%5B%5D=latest_charge&expand%5B%5D=customer",
    );
    let mut i = 0;
    while body.len() < 1000 {
        body.push_str(&format!("&metadata%5Bline_{i}%5D=SKU-{i:04}+Cotton+tee+%28blue%29+x1"));
        i += 1;
    }
    body
}

/// The request around `body`, as the Python SDK sends it; `len` is the body's length as text.
pub fn request<'a>(body: &'a str, len: &'a str) -> HttpRequest<'a> {
    HttpRequest {
        method: "POST",
        target: "/v1/payment_intents",
        version: "HTTP/1.1",
        headers: vec![
            ("Host", b"api.example.test"),
            ("User-Agent", b"Stripe/v1 PythonBindings/16.1.0"),
            ("Authorization", b"Bearer sk_test_6b86b273ff34fce19d6b804e"),
            ("Content-Type", b"application/x-www-form-urlencoded"),
            ("Accept", b"*/*"),
            ("Stripe-Version", b"2026-06-24.dahlia"),
            ("Idempotency-Key", b"5f1b1f0e-8f43-4e0e-a8a7-1c2d3e4f5a6b"),
            ("Content-Length", len.as_bytes()),
        ],
        body: body.as_bytes(),
    }
}
