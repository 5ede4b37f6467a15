//! Kill switches (TRD-11): stored, applied to memory at once, announced on the `risk` stream
//! so orders mass-cancels what is open in their scope and alerting pages.

use std::sync::{Arc, Mutex};

use contracts::events::{Event, KillSwitchActivated, KillSwitchReleased};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AdditionalProperties, KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};
use uuid::Uuid;

use crate::book::{Book, KillSwitch};
use crate::error::{Error, Result};
use crate::store;

/// `POST /v1/admin/kill-switches`. Its document is one shape per scope (its `PartialSchema` below):
/// what `target` must be depends on `scope`, and a request valid by the document is never
/// refused for its shape.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Activate {
    /// `global`, `account` or `symbol`.
    pub scope: String,
    /// The account id or the symbol (1-32 characters); none for `global`.
    pub target: Option<String>,
    /// 1-500 characters, not only spaces.
    pub reason: String,
}

impl utoipa::PartialSchema for Activate {
    fn schema() -> RefOr<Schema> {
        let reason = || {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(500))
                .pattern(Some("\\S"))
                .description(Some("Why; 1-500 characters, not only spaces."))
        };
        let shape = |scope: &str, target: Option<ObjectBuilder>, what: &str| {
            let mut shape = ObjectBuilder::new()
                .schema_type(Type::Object)
                .description(Some(what))
                .property(
                    "scope",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some([scope])),
                )
                .required("scope")
                .property("reason", reason())
                .required("reason")
                .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)));
            shape = match target {
                Some(target) => shape.property("target", target).required("target"),
                None => shape.property("target", ObjectBuilder::new().schema_type(Type::Null)),
            };
            shape
        };
        OneOfBuilder::new()
            .item(shape("global", None, "Every order of every account."))
            .item(shape(
                "account",
                Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
                ),
                "One account's orders.",
            ))
            .item(shape(
                "symbol",
                Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .min_length(Some(1))
                        .max_length(Some(32)),
                ),
                "One instrument's orders.",
            ))
            .into()
    }
}

impl ToSchema for Activate {}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct KillSwitchView {
    pub id: Uuid,
    pub scope: String,
    pub target: Option<String>,
    pub reason: String,
}

impl From<KillSwitch> for KillSwitchView {
    fn from(k: KillSwitch) -> Self {
        Self {
            id: k.id,
            scope: k.scope,
            target: k.target,
            reason: k.reason,
        }
    }
}

fn validate(request: &Activate) -> Result<KillSwitch> {
    let mut errors = Vec::new();
    match (request.scope.as_str(), request.target.as_deref()) {
        ("global", None) => {}
        ("global", Some(_)) => {
            errors.push(("target".into(), "a global switch has no target".into()))
        }
        ("account", Some(target)) if target.parse::<Uuid>().is_ok() => {}
        ("account", _) => errors.push((
            "target".into(),
            "an account switch needs an account id".into(),
        )),
        ("symbol", Some(target)) if (1..=32).contains(&target.chars().count()) => {}
        ("symbol", _) => errors.push(("target".into(), "a symbol switch needs a symbol".into())),
        _ => errors.push(("scope".into(), "must be global, account or symbol".into())),
    }
    if request.reason.trim().is_empty() || request.reason.chars().count() > 500 {
        errors.push(("reason".into(), "1-500 characters".into()));
    }
    if !errors.is_empty() {
        return Err(Error::fields(errors));
    }
    Ok(KillSwitch {
        id: Uuid::now_v7(),
        scope: request.scope.clone(),
        target: request.target.clone(),
        reason: request.reason.trim().to_owned(),
    })
}

/// Stores it and its event in one transaction, then applies it: orders in scope are refused
/// from the moment this returns.
#[tracing::instrument(skip_all, fields(scope = %request.scope))]
pub async fn activate(
    pool: &PgPool,
    book: &Arc<Mutex<Book>>,
    request: &Activate,
    actor: Uuid,
) -> Result<KillSwitch> {
    let switch = validate(request)?;
    let mut tx = pool.begin().await?;
    store::insert_kill_switch(&mut tx, &switch, actor).await?;
    announce(&mut tx, &switch, actor, KillSwitchActivated).await?;
    tx.commit().await?;
    lock(book)?.activate(switch.clone());
    tracing::warn!(id = %switch.id, target = ?switch.target, reason = %switch.reason, "kill switch activated");
    Ok(switch)
}

pub async fn release(pool: &PgPool, book: &Arc<Mutex<Book>>, id: Uuid, actor: Uuid) -> Result<()> {
    let mut tx = pool.begin().await?;
    let switch = store::release_kill_switch(&mut tx, id, actor)
        .await?
        .ok_or(Error::NotFound)?;
    announce(&mut tx, &switch, actor, KillSwitchReleased).await?;
    tx.commit().await?;
    lock(book)?.release(id);
    tracing::warn!(%id, "kill switch released");
    Ok(())
}

async fn announce<E: Event>(
    tx: &mut sqlx::PgConnection,
    switch: &KillSwitch,
    actor: Uuid,
    event: fn(contracts::events::KillSwitch) -> E,
) -> Result<()> {
    let payload = event(contracts::events::KillSwitch {
        kill_switch_id: switch.id,
        scope: switch.scope.clone(),
        target: switch.target.clone(),
        reason: switch.reason.clone(),
        by: actor,
    });
    let event = events::Envelope::of(crate::SERVICE, switch.id.to_string(), 0, &payload)?;
    events::outbox::append(tx, crate::STREAM, &event).await?;
    Ok(())
}

pub fn lock(book: &Arc<Mutex<Book>>) -> Result<std::sync::MutexGuard<'_, Book>> {
    book.lock()
        .map_err(|_| Error::Internal("the risk book is poisoned".to_owned()))
}
