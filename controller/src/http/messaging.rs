//! `/api/v1/messaging/…` and `/api/v1/messages`: each reseller's message providers,
//! templates and settings, and the delivery log of the messages sent to its subscribers.
//! All need `manage_messaging`; rows outside the caller's part of the tree answer 404.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiJson, ApiPath, ApiQuery, AppState, Page};
use crate::db::messages::{
    self, Message, MessageFilter, MessageTemplate, MessagingSettings, NewProvider, NewTemplate,
    Provider, ProviderFilter, SettingsView, TemplateFilter,
};
use crate::error::Result;
use crate::ops::messaging as ops;
use crate::scope::{Actor, Permission};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_providers, put_provider))
        .routes(routes!(get_provider, delete_provider))
        .routes(routes!(list_templates, put_template))
        .routes(routes!(get_template, delete_template))
        .routes(routes!(get_settings, put_settings))
        .routes(routes!(list_messages))
        .routes(routes!(get_message))
}

/// Message providers in your part of the tree (never their credentials).
#[utoipa::path(get, path = "/api/v1/messaging/providers", tag = "messaging", params(ProviderFilter),
    responses((status = 200, body = Page<Provider>)))]
async fn list_providers(
    State(st): State<AppState>,
    actor: Actor,
    ApiQuery(f): ApiQuery<ProviderFilter>,
) -> Result<Json<Page<Provider>>> {
    actor.require(Permission::ManageMessaging)?;
    Ok(Json(
        st.list_page(&actor, f, messages::list_providers, |p| p.id)
            .await?,
    ))
}

/// Set a tenant's provider for a channel (`tenant_id`, by default your own), replacing
/// the one it had. The credential is stored sealed and never shown back. A tenant
/// without a provider for a channel sends through its nearest ancestor's.
#[utoipa::path(post, path = "/api/v1/messaging/providers", tag = "messaging", request_body = NewProvider,
    responses((status = 200, body = Provider)))]
async fn put_provider(
    State(st): State<AppState>,
    actor: Actor,
    ApiJson(input): ApiJson<NewProvider>,
) -> Result<Json<Provider>> {
    actor.require(Permission::ManageMessaging)?;
    let secrets = st.secrets.clone();
    let p = st
        .db
        .write(move |tx| ops::put_provider(tx, &actor, &input, &secrets))
        .await?;
    Ok(Json(p))
}

/// One provider (without its credential).
#[utoipa::path(get, path = "/api/v1/messaging/providers/{id}", tag = "messaging", params(("id" = i64, Path)),
    responses((status = 200, body = Provider)))]
async fn get_provider(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Provider>> {
    actor.require(Permission::ManageMessaging)?;
    let p = st.read_scoped(&actor, move |c, s| messages::get_provider(c, s, id));
    Ok(Json(p.await?))
}

/// Remove a provider: its tenant's subtree sends through the ancestor's again.
#[utoipa::path(delete, path = "/api/v1/messaging/providers/{id}", tag = "messaging", params(("id" = i64, Path)),
    responses((status = 204, description = "Removed")))]
async fn delete_provider(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode> {
    actor.require(Permission::ManageMessaging)?;
    st.db
        .write(move |tx| ops::delete_provider(tx, &actor, id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Message templates in your part of the tree (a trigger and channel with none uses the
/// ancestor's, else the built-in text).
#[utoipa::path(get, path = "/api/v1/messaging/templates", tag = "messaging", params(TemplateFilter),
    responses((status = 200, body = Page<MessageTemplate>)))]
async fn list_templates(
    State(st): State<AppState>,
    actor: Actor,
    ApiQuery(f): ApiQuery<TemplateFilter>,
) -> Result<Json<Page<MessageTemplate>>> {
    actor.require(Permission::ManageMessaging)?;
    Ok(Json(
        st.list_page(&actor, f, messages::list_templates, |t| t.id)
            .await?,
    ))
}

/// Save a tenant's text for a trigger on a channel, replacing the one it had. Texts use
/// `{{field}}` placeholders only (name, username, plan, expires_at, days_left, amount,
/// reseller, portal_url); anything else is refused (`bad_template`).
#[utoipa::path(post, path = "/api/v1/messaging/templates", tag = "messaging", request_body = NewTemplate,
    responses((status = 200, body = MessageTemplate)))]
async fn put_template(
    State(st): State<AppState>,
    actor: Actor,
    ApiJson(input): ApiJson<NewTemplate>,
) -> Result<Json<MessageTemplate>> {
    actor.require(Permission::ManageMessaging)?;
    let t = st
        .db
        .write(move |tx| ops::put_template(tx, &actor, &input))
        .await?;
    Ok(Json(t))
}

/// One template.
#[utoipa::path(get, path = "/api/v1/messaging/templates/{id}", tag = "messaging", params(("id" = i64, Path)),
    responses((status = 200, body = MessageTemplate)))]
async fn get_template(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<MessageTemplate>> {
    actor.require(Permission::ManageMessaging)?;
    let t = st.read_scoped(&actor, move |c, s| messages::get_template(c, s, id));
    Ok(Json(t.await?))
}

/// Remove a template: the ancestor's text, else the built-in one, applies again.
#[utoipa::path(delete, path = "/api/v1/messaging/templates/{id}", tag = "messaging", params(("id" = i64, Path)),
    responses((status = 204, description = "Removed")))]
async fn delete_template(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode> {
    actor.require(Permission::ManageMessaging)?;
    st.db
        .write(move |tx| ops::delete_template(tx, &actor, id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A tenant's messaging settings in force (its own or inherited), `id` being your
/// tenant or one below it.
#[utoipa::path(get, path = "/api/v1/messaging/settings/{id}", tag = "messaging", params(("id" = i64, Path)),
    responses((status = 200, body = SettingsView)))]
async fn get_settings(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<SettingsView>> {
    actor.require(Permission::ManageMessaging)?;
    let v = st.read_scoped(&actor, move |c, s| {
        let t = messages::configurable_tenant(c, s, id)?;
        messages::settings_view(c, &t)
    });
    Ok(Json(v.await?))
}

/// Set a tenant's messaging settings: reminder days, the rate limit, the portal URL.
#[utoipa::path(put, path = "/api/v1/messaging/settings/{id}", tag = "messaging", params(("id" = i64, Path)),
    request_body = MessagingSettings, responses((status = 200, body = SettingsView)))]
async fn put_settings(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
    ApiJson(s): ApiJson<MessagingSettings>,
) -> Result<Json<SettingsView>> {
    actor.require(Permission::ManageMessaging)?;
    let v = st
        .db
        .write(move |tx| ops::put_settings(tx, &actor, id, &s))
        .await?;
    Ok(Json(v))
}

/// The delivery log: messages to subscribers in your part of the tree, newest first,
/// with their status and the provider's last answer.
#[utoipa::path(get, path = "/api/v1/messages", tag = "messaging", params(MessageFilter),
    responses((status = 200, body = Page<Message>)))]
async fn list_messages(
    State(st): State<AppState>,
    actor: Actor,
    ApiQuery(f): ApiQuery<MessageFilter>,
) -> Result<Json<Page<Message>>> {
    actor.require(Permission::ManageMessaging)?;
    Ok(Json(
        st.list_page(&actor, f, messages::list_messages, |m| m.id)
            .await?,
    ))
}

/// One message of the delivery log.
#[utoipa::path(get, path = "/api/v1/messages/{id}", tag = "messaging", params(("id" = i64, Path)),
    responses((status = 200, body = Message)))]
async fn get_message(
    State(st): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Message>> {
    actor.require(Permission::ManageMessaging)?;
    let m = st.read_scoped(&actor, move |c, s| messages::get_message(c, s, id));
    Ok(Json(m.await?))
}
