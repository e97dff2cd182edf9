use super::*;

#[test]
fn cookie_headers_are_marked_sensitive() {
    let mut h = crate::proxy::headers("cookie", &["a=1; __Host-session=xyz", "b=2"]);
    mark_cookie_sensitive(&mut h);
    assert!(h
        .get_all(header::COOKIE)
        .iter()
        .all(HeaderValue::is_sensitive));
}

#[test]
fn a_login_fills_what_the_application_left_empty() {
    let info = RequestInfo {
        user_agent: Some(HeaderValue::from_str(&"x".repeat(1000)).unwrap()),
        client_ip: Some("203.0.113.5".parse().unwrap()),
    };
    let d = info.fill(Device::new().with_label("laptop"));
    assert_eq!(
        d.user_agent.as_deref().map(str::len),
        Some(MAX_USER_AGENT_CHARS)
    );
    assert_eq!(d.ip.as_deref(), Some("203.0.113.5"));
    assert_eq!(d.label.as_deref(), Some("laptop"));
    let d = info.fill(Device::new().with_user_agent("mine").with_ip("192.0.2.1"));
    assert_eq!(d.user_agent.as_deref(), Some("mine"));
    assert_eq!(d.ip.as_deref(), Some("192.0.2.1"));
    assert_eq!(RequestInfo::default().fill(Device::new()), Device::new());
}
