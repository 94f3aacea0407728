//! Output exactly as RootlessKit's rootlessctl prints it (Go's tabwriter,
//! `json.MarshalIndent` with four spaces, `%v` of slices).

use rk_ports::api::Info;
use rk_ports::PortStatus;

/// Go's `tabwriter.NewWriter(w, 4, 8, 4, ' ', 0)` over cells that all end
/// in a tab: every column padded to its widest cell plus 4, at least 4.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            let widest = rows
                .iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0);
            (widest + 4).max(4)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        for (c, cell) in r.iter().enumerate() {
            out.push_str(cell);
            out.extend(std::iter::repeat_n(' ', widths[c] - cell.chars().count()));
        }
        out.push('\n');
    }
    out
}

pub fn port_table(ports: &[PortStatus]) -> String {
    let mut rows = vec![[
        "ID",
        "PROTO",
        "PARENTIP",
        "PARENTPORT",
        "CHILDIP",
        "CHILDPORT",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect::<Vec<_>>()];
    for p in ports {
        rows.push(vec![
            p.id.to_string(),
            p.spec.proto.clone(),
            p.spec.parent_ip.clone(),
            p.spec.parent_port.to_string(),
            p.spec.child_ip.clone(),
            p.spec.child_port.to_string(),
        ]);
    }
    table(&rows)
}

/// `%v` of a Go slice: `[a b c]`.
fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

pub fn info_text(info: &Info) -> String {
    let mut s = format!(
        "- REST API version: {}\n- Implementation version: {}\n- State Directory: {}\n- Child PID: {}\n",
        info.api_version, info.version, info.state_dir, info.child_pid
    );
    if let Some(n) = &info.network_driver {
        s += &format!(
            "- Network Driver: {}\n  - DNS: {}\n",
            n.driver,
            go_list(&n.dns)
        );
        if let Some(ip) = &n.child_ip {
            s += &format!("  - IP: {ip}\n");
        }
        for (k, v) in &n.info {
            s += &format!("  - {k}: {v}\n");
        }
    }
    if let Some(p) = &info.port_driver {
        s += &format!(
            "- Port Driver: {}\n  - Supported protocols: {}\n",
            p.driver,
            go_list(&p.protos)
        );
    }
    s
}

/// `json.MarshalIndent(v, "", "    ")`.
pub fn indented_json<T: serde::Serialize>(v: &T) -> String {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    v.serialize(&mut ser).expect("serializable");
    String::from_utf8(out).expect("JSON is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_like_go_tabwriter() {
        let ports = vec![PortStatus {
            id: 1,
            spec: rk_ports::PortSpec::parse("0.0.0.0:8080:80/tcp").unwrap(),
        }];
        assert_eq!(
            port_table(&ports),
            "ID    PROTO    PARENTIP    PARENTPORT    CHILDIP    CHILDPORT    \n\
             1     tcp      0.0.0.0     8080                     80           \n"
        );
    }

    #[test]
    fn info_shows_the_drivers_own_facts_after_its_address() {
        let info = Info {
            network_driver: Some(rk_ports::api::NetworkDriverInfo {
                driver: "slirp4netns".into(),
                dns: vec!["10.0.2.3".into()],
                child_ip: Some("10.0.2.100".into()),
                info: [("slirp4netns.version".to_owned(), "1.2.0".to_owned())].into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = info_text(&info);
        assert!(
            text.ends_with(
                "- Network Driver: slirp4netns\n  - DNS: [10.0.2.3]\n  - IP: 10.0.2.100\n  - slirp4netns.version: 1.2.0\n"
            ),
            "{text}"
        );
        let json = indented_json(&info);
        assert!(json.contains(r#""slirp4netns.version": "1.2.0""#), "{json}");
    }
}
