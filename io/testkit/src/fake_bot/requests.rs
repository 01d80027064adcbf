//! The fake's answers to `getChatMember` and the webhook methods, and the
//! form or JSON fields a request carries.

use super::*;

/// `getChatMember`: the status set for the chat and user, `member` if none
/// was; 500 while faults are scripted.
pub(super) fn get_chat_member(body: &[u8], state: &Mutex<State>) -> Reply {
    let Ok(params) = serde_json::from_slice::<Value>(body) else {
        return error(StatusCode::BAD_REQUEST, "Bad Request: not JSON");
    };
    let id = |v: &Value| {
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    };
    let (Some(chat), Some(user)) = (id(&params["chat_id"]), id(&params["user_id"])) else {
        return error(
            StatusCode::BAD_REQUEST,
            "Bad Request: chat or user not found",
        );
    };
    let status = {
        let mut s = state.lock();
        s.member_lookups += 1;
        if s.member_faults > 0 {
            s.member_faults -= 1;
            return error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
        }
        s.members
            .get(&(chat, user))
            .copied()
            .unwrap_or(MemberStatus::Member)
    };
    let mut member = json!({"user": {"id": user, "is_bot": false, "first_name": "fake"}});
    let fields = match status {
        MemberStatus::Creator => json!({"status": "creator", "is_anonymous": false}),
        MemberStatus::Administrator => json!({
            "status": "administrator", "is_anonymous": false, "can_be_edited": false,
            "can_manage_chat": true, "can_change_info": true, "can_delete_messages": true,
            "can_manage_video_chats": true, "can_invite_users": true,
            "can_restrict_members": true, "can_promote_members": false
        }),
        MemberStatus::Member => json!({"status": "member"}),
        MemberStatus::Left => json!({"status": "left"}),
    };
    if let (Value::Object(m), Value::Object(f)) = (&mut member, fields) {
        m.extend(f);
    }
    reply(StatusCode::OK, &json!({"ok": true, "result": member}))
}

/// `setWebhook`, `deleteWebhook` (each honouring `drop_pending_updates`)
/// and `getWebhookInfo`; `method` in lower case.
pub(super) fn webhook(
    method: &str,
    params: &HashMap<String, String>,
    state: &Mutex<State>,
) -> Reply {
    let mut s = state.lock();
    let info = |s: &State| {
        let url = s.webhook.as_ref().map_or("", |w| w.url.as_str());
        json!({"url": url, "has_custom_certificate": false, "pending_update_count": s.updates.len()})
    };
    if method == "getwebhookinfo" {
        return reply(StatusCode::OK, &json!({"ok": true, "result": info(&s)}));
    }
    if params.get("drop_pending_updates").map(String::as_str) == Some("true") {
        s.updates.clear();
    }
    if method == "deletewebhook" {
        s.webhook = None;
    } else {
        let Some(url) = params.get("url").filter(|u| !u.is_empty()) else {
            return error(
                StatusCode::BAD_REQUEST,
                "Bad Request: bad webhook: URL is empty",
            );
        };
        s.webhook = Some(Webhook {
            url: url.clone(),
            secret_token: params.get("secret_token").cloned(),
        });
    }
    reply(StatusCode::OK, &json!({"ok": true, "result": true}))
}

/// A request's parameters as text, from a `multipart/form-data` body or a
/// JSON object (numbers and booleans as they print); `None` if it is
/// neither.
pub(super) fn form_fields(content_type: &str, body: &[u8]) -> Option<HashMap<String, String>> {
    if let Some(boundary) = multipart::boundary(content_type) {
        return multipart::parts(boundary, body).map(|parts| {
            parts
                .into_iter()
                .map(|p| (p.name, String::from_utf8_lossy(&p.bytes).into_owned()))
                .collect()
        });
    }
    let text = std::str::from_utf8(body).ok()?;
    if text.trim().is_empty() {
        return Some(HashMap::new());
    }
    let Value::Object(fields) = serde_json::from_str::<Value>(text).ok()? else {
        return None;
    };
    let as_text = |v: Value| match v {
        Value::String(s) => s,
        other => other.to_string(),
    };
    Some(fields.into_iter().map(|(k, v)| (k, as_text(v))).collect())
}
