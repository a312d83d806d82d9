//! The pages a person sees: login, consent, and errors that must not redirect. Server-side
//! HTML, no JavaScript, no external assets, readable on a phone. Every interpolated value is
//! escaped; the CSP (see `http::html`) forbids scripts and framing anyway.

/// Escapes text for HTML element content and double-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;background:#f4f5f7;color:#1c1e21;margin:0;padding:1rem}\
main{max-width:26rem;margin:2rem auto;background:#fff;border-radius:12px;padding:1.5rem;box-shadow:0 1px 4px rgba(0,0,0,.12)}\
h1{font-size:1.3rem;margin:0 0 1rem}label{display:block;margin:.8rem 0 .3rem;font-weight:600}\
input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:.6rem;font-size:1rem;border:1px solid #bbb;border-radius:6px}\
button{font-size:1rem;padding:.65rem 1.2rem;border-radius:6px;border:1px solid #1a56db;background:#1a56db;color:#fff;margin-top:1rem;cursor:pointer}\
button.secondary{background:#fff;color:#1a56db}.error{background:#fde8e8;color:#9b1c1c;padding:.6rem;border-radius:6px}\
.warn{background:#fdf6b2;color:#723b13;padding:.6rem;border-radius:6px}ul{padding-left:1.2rem}code{word-break:break-all}\
.client{display:flex;align-items:center;gap:.8rem}.client img{width:48px;height:48px;border-radius:8px}\
.actions{display:flex;gap:.6rem;flex-wrap:wrap}small{color:#555}\
button.provider{width:100%;background:#24292f;border-color:#24292f}.or{text-align:center;margin:1.2rem 0 0}";

fn layout(title: &str, content: &str) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title}</title><style>{STYLE}</style></head><body><main>{content}</main></body></html>",
        title = escape(title),
    )
}

/// What the login page shows.
pub struct LoginView<'a> {
    pub client_name: &'a str,
    /// The issuer's path ("" or "/tenant"): forms post to paths under it, on whatever
    /// origin the browser is on (the page is also shown at the providers' callback paths,
    /// where a relative action would resolve elsewhere).
    pub base: &'a str,
    /// Identifies the pending authorization.
    pub request: &'a str,
    /// Binds the forms to this browser's session.
    pub csrf: &'a str,
    pub error: Option<&'a str>,
    /// Local users exist: show the password form.
    pub local: bool,
    /// `(id, display name)` of each upstream identity provider.
    pub providers: &'a [(&'a str, &'a str)],
}

/// The login page: a button per identity provider, and the password form for local users.
pub fn login(view: &LoginView<'_>) -> String {
    let error = view
        .error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    let hidden = format!(
        "<input type=\"hidden\" name=\"request\" value=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(view.request),
        escape(view.csrf)
    );
    let mut forms = String::new();
    for (id, name) in view.providers {
        forms.push_str(&format!(
            "<form method=\"post\" action=\"{base}/login/{id}\" id=\"provider-{id}\">{hidden}\
<button type=\"submit\" class=\"provider\">Continue with {name}</button></form>",
            base = escape(view.base),
            id = escape(id),
            name = escape(name),
        ));
    }
    if view.local {
        if !view.providers.is_empty() {
            forms.push_str("<p class=\"or\"><small>or sign in with a local account</small></p>");
        }
        forms.push_str(&format!(
            "<form method=\"post\" action=\"{base}/login\" id=\"login\">{hidden}\
<label for=\"username\">Username</label><input type=\"text\" id=\"username\" name=\"username\" autocomplete=\"username\" autocapitalize=\"none\" required{autofocus}>\
<label for=\"password\">Password</label><input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required>\
<button type=\"submit\">Sign in</button></form>",
            base = escape(view.base),
            autofocus = if view.providers.is_empty() { " autofocus" } else { "" },
        ));
    }
    layout(
        "Sign in",
        &format!(
            "<h1>Sign in</h1><p><strong>{client}</strong> wants to access an MCP server on your behalf.</p>{error}{forms}",
            client = escape(view.client_name),
        ),
    )
}

/// What the consent page shows.
pub struct ConsentView<'a> {
    pub client_name: &'a str,
    pub client_id: &'a str,
    /// The client's logo as a `data:` URI (see `logo`): the page loads nothing from
    /// elsewhere.
    pub logo: Option<&'a str>,
    pub redirect_host: &'a str,
    /// The redirect goes to another host than the client_id URL's (CIMD clients).
    pub redirect_host_differs: bool,
    pub redirect_is_loopback: bool,
    pub resource: &'a str,
    pub resource_name: Option<&'a str>,
    pub scopes: &'a [String],
    pub user: &'a str,
    pub request: &'a str,
    pub csrf: &'a str,
    /// The issuer's path (the form posts to a path under it).
    pub base: &'a str,
}

pub fn consent(view: &ConsentView<'_>) -> String {
    let logo = view
        .logo
        .filter(|uri| super::logo::is_inlined(uri))
        .map(|uri| format!("<img src=\"{}\" alt=\"\">", escape(uri)))
        .unwrap_or_default();
    let scopes = if view.scopes.is_empty() {
        "<li>no particular scope</li>".to_string()
    } else {
        view.scopes
            .iter()
            .map(|s| format!("<li><code>{}</code></li>", escape(s)))
            .collect()
    };
    let mut warnings = String::new();
    if view.redirect_host_differs {
        warnings.push_str(&format!(
            "<p class=\"warn\">This application sends you back to <strong>{}</strong>, which is not the host that published its identity. Continue only if you trust it.</p>",
            escape(view.redirect_host)
        ));
    }
    if view.redirect_is_loopback {
        warnings.push_str("<p class=\"warn\">This application runs on this computer (it receives the answer on localhost). Continue only if you started it.</p>");
    }
    let resource = match view.resource_name {
        Some(name) => format!(
            "{} <small>({})</small>",
            escape(name),
            escape(view.resource)
        ),
        None => format!("<code>{}</code>", escape(view.resource)),
    };
    layout(
        "Allow access?",
        &format!(
            "<div class=\"client\">{logo}<h1>Allow <strong>{client}</strong> to access {resource}?</h1></div>\
<p>Signed in as <strong>{user}</strong>.</p>\
<p>Client: <code>{client_id}</code><br>Answers go to: <strong>{redirect_host}</strong></p>{warnings}\
<p>It will be able to:</p><ul>{scopes}</ul>\
<form method=\"post\" action=\"{base}/consent\" id=\"consent\">\
<input type=\"hidden\" name=\"request\" value=\"{request}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<div class=\"actions\"><button type=\"submit\" name=\"decision\" value=\"approve\" id=\"approve\">Allow</button>\
<button type=\"submit\" name=\"decision\" value=\"deny\" class=\"secondary\" id=\"deny\">Deny</button></div></form>",
            client = escape(view.client_name),
            client_id = escape(view.client_id),
            redirect_host = escape(view.redirect_host),
            user = escape(view.user),
            request = escape(view.request),
            csrf = escape(view.csrf),
            base = escape(view.base),
        ),
    )
}

/// An error that cannot be sent back to the client (unknown client, unregistered redirect
/// URI: redirecting there would make us an open redirector).
pub fn error(title: &str, detail: &str) -> String {
    layout(
        title,
        &format!(
            "<h1>{}</h1><p class=\"error\" role=\"alert\">{}</p><p><small>Close this window and try again from your application.</small></p>",
            escape(title),
            escape(detail)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolated_text_is_escaped() {
        let page = login(&LoginView {
            client_name: "<script>x</script>\"'&",
            base: "/tenant",
            request: "r\"",
            csrf: "c",
            error: Some("<b>"),
            local: true,
            providers: &[("corp", "<i>Corp</i>")],
        });
        assert!(!page.contains("<script>x"));
        assert!(page.contains("&lt;script&gt;x&lt;/script&gt;&quot;&#39;&amp;"));
        assert!(page.contains("value=\"r&quot;\""));
        assert!(page.contains("&lt;b&gt;"));
        assert!(page.contains("Continue with &lt;i&gt;Corp&lt;/i&gt;"));
        assert!(page.contains("action=\"/tenant/login/corp\" id=\"provider-corp\""));
    }

    fn consent_with_logo(logo: Option<&str>) -> String {
        consent(&ConsentView {
            client_name: "App",
            client_id: "https://app.example/client.json",
            logo,
            redirect_host: "app.example",
            redirect_host_differs: false,
            redirect_is_loopback: false,
            resource: "https://mcp.example/mcp",
            resource_name: None,
            scopes: &[],
            user: "alice",
            request: "r",
            csrf: "c",
            base: "",
        })
    }

    #[test]
    fn the_consent_page_shows_only_an_inlined_logo() {
        let page = consent_with_logo(Some("data:image/png;base64,iVBORw0KGgo="));
        assert!(page.contains("<img src=\"data:image/png;base64,iVBORw0KGgo=\" alt=\"\">"));
        for external in [
            "https://cdn.example/logo.png",
            "//cdn.example/logo.png",
            "data:image/svg+xml;base64,PHN2Zy8+",
            "data:text/html,<script>alert(1)</script>",
        ] {
            let page = consent_with_logo(Some(external));
            assert!(!page.contains("<img"), "{external}: {page}");
        }
        assert!(!consent_with_logo(None).contains("<img"));
    }
}
