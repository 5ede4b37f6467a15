//! The auth flow through the gateway, exactly per docs/design.md §5.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{PASSWORD, Tokens, assert_problem, spawn_app, spawn_app_with};

#[sqlx::test(migrations = false)]
async fn a_user_registers_logs_in_refreshes_and_logs_out(pool: PgPool) {
    let app = spawn_app(pool).await;

    let registered = app.register("Alice@Example.com", PASSWORD).await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    let user: Value = registered.json().await.unwrap();
    assert_eq!(user["email"], "alice@example.com");
    assert_eq!(user["roles"], json!(["trader"]));

    let login = app.login("alice@example.com", PASSWORD).await;
    assert_eq!(login.status(), StatusCode::OK);
    assert_eq!(login.headers()["cache-control"], "no-store");
    let tokens: Tokens = login.json().await.unwrap();
    assert_eq!(tokens.token_type, "Bearer");
    assert!(tokens.expires_in > 0 && tokens.expires_in <= 900);

    let me: Value = app.me(&tokens.access_token).await.json().await.unwrap();
    assert_eq!(me["id"], user["id"]);
    assert_eq!(me["email"], "alice@example.com");

    let refreshed = app.refresh(&tokens.refresh_token).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let rotated: Tokens = refreshed.json().await.unwrap();
    assert_ne!(rotated.refresh_token, tokens.refresh_token);
    assert_eq!(app.me(&rotated.access_token).await.status(), StatusCode::OK);

    let logout = app
        .client
        .post(app.url("/v1/auth/logout"))
        .bearer_auth(&rotated.access_token)
        .json(&json!({ "refresh_token": rotated.refresh_token }))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);

    // The session is over: its refresh token no longer works.
    assert_problem(
        app.refresh(&rotated.refresh_token).await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    )
    .await;
}

#[sqlx::test(migrations = false)]
async fn reusing_a_rotated_refresh_token_revokes_the_whole_family(pool: PgPool) {
    let app = spawn_app(pool).await;
    let first = app.signed_up("bob@example.com").await;
    let second: Tokens = app
        .refresh(&first.refresh_token)
        .await
        .json()
        .await
        .unwrap();

    // An attacker replays the stolen, already-rotated token.
    assert_problem(
        app.refresh(&first.refresh_token).await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    )
    .await;

    // The legitimate holder's current token died with the family.
    assert_problem(
        app.refresh(&second.refresh_token).await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    )
    .await;
    let reuse_audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM auth.audit_log WHERE event_type = 'refresh_token_reused'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(reuse_audited, 1);
}

#[sqlx::test(migrations = false)]
async fn revoking_all_sessions_ends_every_login(pool: PgPool) {
    let app = spawn_app(pool).await;
    let laptop = app.signed_up("carol@example.com").await;
    let phone: Tokens = app
        .login("carol@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();

    let revoke = app
        .client
        .delete(app.url("/v1/auth/sessions"))
        .bearer_auth(&phone.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), StatusCode::NO_CONTENT);

    for token in [&laptop.refresh_token, &phone.refresh_token] {
        assert_problem(
            app.refresh(token).await,
            StatusCode::UNAUTHORIZED,
            "invalid_refresh_token",
        )
        .await;
    }
}

#[sqlx::test(migrations = false)]
async fn logging_out_with_someone_elses_refresh_token_changes_nothing(pool: PgPool) {
    let app = spawn_app(pool).await;
    let victim = app.signed_up("victim@example.com").await;
    let attacker = app.signed_up("attacker@example.com").await;

    let logout = app
        .client
        .post(app.url("/v1/auth/logout"))
        .bearer_auth(&attacker.access_token)
        .json(&json!({ "refresh_token": victim.refresh_token }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        logout.status(),
        StatusCode::NO_CONTENT,
        "same answer as a real logout"
    );
    assert_eq!(
        app.refresh(&victim.refresh_token).await.status(),
        StatusCode::OK
    );
}

#[sqlx::test(migrations = false)]
async fn wrong_email_and_wrong_password_get_the_same_answer(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.signed_up("dave@example.com").await;

    let unknown = assert_problem(
        app.login("nobody@example.com", PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    let wrong = assert_problem(
        app.login("dave@example.com", "not the password!").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    assert_eq!(unknown["detail"], wrong["detail"]);
    assert_eq!(unknown["title"], wrong["title"]);
}

#[sqlx::test(migrations = false)]
async fn registering_a_taken_email_reveals_nothing_and_changes_nothing(pool: PgPool) {
    let app = spawn_app(pool).await;
    let first = app.register("erin@example.com", PASSWORD).await;
    let first: Value = first.json().await.unwrap();

    let again = app
        .register("erin@example.com", "another long password")
        .await;
    assert_eq!(again.status(), StatusCode::CREATED, "looks like a success");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["email"], "erin@example.com");
    assert_ne!(
        again["id"], first["id"],
        "the existing account's id is not disclosed"
    );

    // The original password still works, the second one does not.
    assert_eq!(
        app.login("erin@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.login("erin@example.com", "another long password")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM auth.users")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(users, 1);
}

#[sqlx::test(migrations = false)]
async fn weak_passwords_and_bad_emails_are_422_with_every_field(pool: PgPool) {
    let app = spawn_app(pool).await;
    let body = assert_problem(
        app.register("not-an-email", "short").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["email", "password"]);

    let same = app
        .register("frank.long.name@example.com", "frank.long.name@example.com")
        .await;
    let body = assert_problem(same, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("email")
    );

    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM auth.users")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(users, 0, "nothing was written");
}

#[sqlx::test(migrations = false)]
async fn passwords_are_stored_as_argon2id_and_rehashed_when_parameters_change(pool: PgPool) {
    // Registered under weak parameters (as if configured years ago)...
    let old = spawn_app(pool.clone()).await;
    old.register("grace@example.com", PASSWORD).await;
    let stored: String = sqlx::query_scalar("SELECT password_hash FROM auth.users")
        .fetch_one(&old.db)
        .await
        .unwrap();
    assert!(
        stored.starts_with("$argon2id$v=19$m=4096,t=1,p=1$"),
        "{stored}"
    );
    drop(old);

    // ...then the service runs with the OWASP defaults: the next login upgrades the hash.
    let app = spawn_app_with(
        pool,
        &[
            ("BOURSE_AUTH_ARGON2_MEMORY_KIB", "19456"),
            ("BOURSE_AUTH_ARGON2_ITERATIONS", "2"),
        ],
    )
    .await;
    assert_eq!(
        app.login("grace@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
    let upgraded: String = sqlx::query_scalar("SELECT password_hash FROM auth.users")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(
        upgraded.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{upgraded}"
    );
    assert_eq!(
        app.login("grace@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
}
