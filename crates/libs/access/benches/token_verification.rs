//! Token verification, the check in front of every authenticated request (PRF-02).
//! Run: `cargo bench -p access --bench token_verification`

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use access::{Claims, JwksCache, Role, StaticKeySource, TokenVerifier};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, OctetKeyPairParameters,
    OctetKeyPairType,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

fn main() {
    divan::main();
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    verifier: TokenVerifier,
    token: String,
}

#[allow(clippy::expect_used)]
fn fixture() -> Fixture {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("keygen");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key parses");
    let jwks = JwkSet {
        keys: vec![Jwk {
            common: CommonParameters {
                key_id: Some("bench".to_owned()),
                ..CommonParameters::default()
            },
            algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                key_type: OctetKeyPairType::OctetKeyPair,
                curve: EllipticCurve::Ed25519,
                x: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
            }),
        }],
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = Claims {
        iss: "bourse-auth".to_owned(),
        aud: "bourse".to_owned(),
        sub: uuid::Uuid::now_v7(),
        exp: now + 900,
        nbf: now,
        iat: now,
        jti: uuid::Uuid::now_v7(),
        roles: vec![Role::Trader],
        api_key: None,
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("bench".to_owned());
    let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(pkcs8.as_ref()))
        .expect("token signs");
    let verifier = TokenVerifier::new(
        JwksCache::new(Arc::new(StaticKeySource(jwks))),
        "bourse-auth",
        "bourse",
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    // Warm the key cache: the benchmark measures the steady state of a running service.
    runtime
        .block_on(verifier.verify(&token))
        .expect("token verifies");
    Fixture {
        runtime,
        verifier,
        token,
    }
}

/// First sight of a token: header parse, cached key lookup, Ed25519 signature check, claims
/// validation.
#[divan::bench]
fn verify_access_token(bencher: divan::Bencher) {
    let fixture = fixture();
    bencher.bench_local(|| {
        fixture
            .runtime
            .block_on(
                fixture
                    .verifier
                    .verify_uncached(divan::black_box(&fixture.token)),
            )
            .is_ok()
    });
}

/// A token seen before (the common case: a client sends the same token for 15 minutes):
/// SHA-256 of the token and a map lookup.
#[divan::bench]
fn verify_remembered_token(bencher: divan::Bencher) {
    let fixture = fixture();
    bencher.bench_local(|| {
        fixture
            .runtime
            .block_on(fixture.verifier.verify(divan::black_box(&fixture.token)))
            .is_ok()
    });
}
