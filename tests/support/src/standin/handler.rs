//! Request routing of the stand-in: discovery, Nodes, Events, NodeFeatures, faults, log.

// Error responses are whole `http::Response`s; their size does not matter in a test server.
#![allow(clippy::result_large_err)]

use super::{
    Action, ChanBody, Logged, NodeInfo, NodeObj, StandIn, State, Watcher, node_json, watch_line,
};
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

type Resp = http::Response<ChanBody>;

fn respond(code: u16, body: Value) -> Resp {
    http::Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(ChanBody::full(body.to_string()))
        .unwrap_or_else(|_| http::Response::new(ChanBody::full("")))
}

fn status(code: u16, reason: &str, message: &str) -> Resp {
    respond(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

fn reason_for(code: u16) -> &'static str {
    match code {
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        410 => "Expired",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        _ => "InternalError",
    }
}

fn percent_decode(s: &str) -> String {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: Option<&str>) -> BTreeMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

/// `metadata.name=X` / `metadata.name==X`; `Err` for selectors we do not implement.
fn name_selector(q: &BTreeMap<String, String>) -> Result<Option<String>, String> {
    let Some(sel) = q.get("fieldSelector").filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let v = sel
        .strip_prefix("metadata.name==")
        .or_else(|| sel.strip_prefix("metadata.name="))
        .ok_or_else(|| {
            format!("stand-in supports only fieldSelector metadata.name=…, got {sel}")
        })?;
    Ok(Some(v.to_owned()))
}

/// How long the watch cache waits for a resourceVersion it has not reached before giving up
/// (`blockTimeout` in `watch_cache.go`).
const TOO_LARGE_WAIT: Duration = Duration::from_secs(3);

/// The apiserver's `NewTooLargeResourceVersionError(requested, current, 1)` as a Status body
/// (`staging/src/k8s.io/apiserver/pkg/storage/errors.go`).
pub fn too_large_status(requested: u64, current: u64) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("Timeout: Too large resource version: {requested}, current: {current}"),
           "reason": "Timeout",
           "details": {"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                       "retryAfterSeconds": 1},
           "code": 504})
}

/// HTTP 504 with the too-large Status (and `Retry-After: 1`, as `ErrorNegotiated` sets it).
fn too_large_response(requested: u64, current: u64) -> Resp {
    let mut r = respond(504, too_large_status(requested, current));
    r.headers_mut()
        .insert("retry-after", http::HeaderValue::from_static("1"));
    r
}

/// A watch stream holding exactly one ERROR event with `status` (the apiserver's
/// `newErrWatcher`: once a watch passed authn/authz, its errors arrive as events).
fn error_watch(status: Value) -> Resp {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut s = json!({"type": "ERROR", "object": status}).to_string();
    s.push('\n');
    let _ = tx.send(Bytes::from(s));
    drop(tx);
    http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(ChanBody::stream(rx))
        .unwrap_or_else(|_| http::Response::new(ChanBody::full("")))
}

/// What a client may get for a Node, as the apiserver negotiates `Accept`
/// (`endpoints/handlers/negotiation`, `AllowsMediaTypeTransform`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repr {
    Full,
    Meta,
    MetaList,
}

/// The first acceptable media range of `accept`, or `None` (406). A range with `as=` must name
/// `g=meta.k8s.io` and `v=v1` or `v1beta1`; unknown parameters make a range unacceptable.
/// `Table` is not implemented by the stand-in, so such a range is skipped (kubectl always adds
/// a plain `application/json` fallback); YAML and protobuf are not served either.
pub fn negotiate(accept: &str) -> Option<Repr> {
    if accept.trim().is_empty() {
        return Some(Repr::Full);
    }
    'ranges: for range in accept.split(',') {
        let mut parts = range.split(';');
        let Some((ty, sub)) = parts.next().map(str::trim).and_then(|m| m.split_once('/')) else {
            continue;
        };
        if !matches!(ty, "*" | "application") || !matches!(sub, "*" | "json") {
            continue;
        }
        let (mut kind, mut group, mut version) = (None, None, None);
        for p in parts {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            match k.trim() {
                "as" => kind = Some(v.trim()),
                "g" => group = Some(v.trim()),
                "v" => version = Some(v.trim()),
                "q" | "pretty" => {}
                _ => continue 'ranges,
            }
        }
        let Some(kind) = kind else {
            return Some(Repr::Full);
        };
        if group != Some("meta.k8s.io") || !matches!(version, Some("v1" | "v1beta1")) {
            continue;
        }
        match kind {
            "PartialObjectMetadata" => return Some(Repr::Meta),
            "PartialObjectMetadataList" => return Some(Repr::MetaList),
            _ => continue,
        }
    }
    None
}

fn not_acceptable(message: &str) -> Resp {
    status(406, "NotAcceptable", message)
}

const LABEL_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const DNS1123_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_lowercase() | b[0].is_ascii_digit()
                && b[b.len() - 1].is_ascii_lowercase() | b[b.len() - 1].is_ascii_digit()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// `content.IsLabelKey` (apimachinery `pkg/api/validate/content/kube.go`): the messages a real
/// apiserver gives.
pub fn label_key_errors(key: &str) -> Vec<String> {
    let regex_err = |msg: &str| {
        format!(
            "{msg} (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '{LABEL_FMT}')"
        )
    };
    let msg = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
    let parts: Vec<&str> = key.split('/').collect();
    let mut errs = Vec::new();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_owned());
            } else {
                if prefix.len() > 253 {
                    errs.push("prefix part must be no more than 253 bytes".to_owned());
                }
                if !is_dns1123_subdomain(prefix) {
                    errs.push(format!("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '{DNS1123_FMT}')"));
                }
            }
            name
        }
        _ => {
            return vec![format!(
                "a valid label key {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_err(msg)
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_owned());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 bytes".to_owned());
    }
    if !is_label_name(name) {
        errs.push(format!("name part {}", regex_err(msg)));
    }
    errs
}

/// `content.IsLabelValue`.
pub fn label_value_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push("must be no more than 63 bytes".to_owned());
    }
    if !value.is_empty() && !is_label_name(value) {
        errs.push(format!("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '({LABEL_FMT})?')"));
    }
    errs
}

/// 422 for invalid labels, shaped like the apiserver's `NewInvalid("Node", name, errs)`.
fn check_labels<'a>(
    name: &str,
    labels: impl Iterator<Item = (&'a String, Option<&'a String>)>,
) -> Result<(), Resp> {
    let mut causes = Vec::new();
    for (k, v) in labels {
        for e in label_key_errors(k) {
            causes.push(format!("Invalid value: {k:?}: {e}"));
        }
        if let Some(v) = v {
            for e in label_value_errors(v) {
                causes.push(format!("Invalid value: {v:?}: {e}"));
            }
        }
    }
    if causes.is_empty() {
        return Ok(());
    }
    let joined: Vec<String> = causes
        .iter()
        .map(|c| format!("metadata.labels: {c}"))
        .collect();
    let message = if joined.len() == 1 {
        format!("Node {name:?} is invalid: {}", joined[0])
    } else {
        format!("Node {name:?} is invalid: [{}]", joined.join(", "))
    };
    let causes: Vec<Value> = causes
        .iter()
        .map(|c| json!({"reason": "FieldValueInvalid", "message": c, "field": "metadata.labels"}))
        .collect();
    Err(respond(
        422,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": "Invalid",
               "details": {"name": name, "kind": "Node", "causes": causes}, "code": 422}),
    ))
}

/// An equality-based `labelSelector` (`a=b,c==d`) as pairs; `Err` for set-based ones.
fn label_selector(q: &BTreeMap<String, String>) -> Result<Vec<(String, String)>, String> {
    let Some(sel) = q.get("labelSelector").filter(|s| !s.is_empty()) else {
        return Ok(Vec::new());
    };
    sel.split(',')
        .map(|term| {
            let (k, v) = term
                .split_once("==")
                .or_else(|| term.split_once('='))
                .filter(|(k, _)| !k.ends_with('!'))
                .ok_or_else(|| {
                    format!("stand-in supports only equality label selectors, got {sel}")
                })?;
            Ok((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

impl StandIn {
    pub async fn handle(&self, req: http::Request<Bytes>) -> Resp {
        let method = req.method().as_str().to_owned();
        let path = req.uri().path().to_owned();
        let query = parse_query(req.uri().query());
        let header = |h: &str| {
            req.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let (content_type, accept) = (header("content-type"), header("accept"));
        let watch = query.get("watch").is_some_and(|v| v == "true" || v == "1");
        // Faults: the first matching one with hits left.
        let mut latency = None;
        let mut injected = None;
        {
            let mut st = self.st();
            for f in st.faults.iter_mut() {
                let w = &f.when;
                let hit = w.method.is_none_or(|m| m == method)
                    && w.path_contains
                        .as_ref()
                        .is_none_or(|p| path.contains(p.as_str()))
                    && w.watch.is_none_or(|x| x == watch)
                    && f.times.is_none_or(|t| t > 0);
                if !hit {
                    continue;
                }
                if let Some(t) = f.times.as_mut() {
                    *t -= 1;
                }
                match f.what {
                    Action::Latency(d) => latency = Some(d),
                    Action::Status(code, ra) => {
                        injected = Some((code, ra));
                        break;
                    }
                    Action::TooLargeResourceVersion => {
                        injected = Some((504, None));
                        break;
                    }
                }
            }
        }
        if let Some(d) = latency {
            tokio::time::sleep(d).await;
        }
        // A GET or LIST that asks for a resourceVersion the server has not reached waits up
        // to 3 s for it (the watch cache's blockTimeout), then answers 504.
        let too_large = |me: &Self| {
            query
                .get("resourceVersion")
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|rv| *rv > me.st().rv)
        };
        if !watch
            && method == "GET"
            && path.starts_with("/api/v1/nodes")
            && too_large(self).is_some()
        {
            tokio::time::sleep(TOO_LARGE_WAIT).await;
        }
        let resp = match injected {
            Some((504, None)) if watch => {
                let (rv, asked) = (
                    self.st().rv,
                    query.get("resourceVersion").and_then(|v| v.parse().ok()),
                );
                error_watch(too_large_status(asked.unwrap_or(rv + 1), rv))
            }
            Some((504, None)) => {
                let (rv, asked) = (
                    self.st().rv,
                    query.get("resourceVersion").and_then(|v| v.parse().ok()),
                );
                too_large_response(asked.unwrap_or(rv + 1), rv)
            }
            None if !watch
                && method == "GET"
                && path.starts_with("/api/v1/nodes")
                && too_large(self).is_some() =>
            {
                too_large_response(too_large(self).unwrap_or_default(), self.st().rv)
            }
            Some((code, ra)) => {
                let mut r = status(code, reason_for(code), "injected fault");
                if let Some(s) = ra
                    && let Ok(v) = http::HeaderValue::from_str(&s.to_string())
                {
                    r.headers_mut().insert("retry-after", v);
                }
                r
            }
            None => self.route(&method, &path, &query, &content_type, &accept, req.body()),
        };
        self.st().log.push(Logged {
            method,
            path,
            query,
            content_type,
            accept,
            status: resp.status().as_u16(),
            at: Instant::now(),
            watch,
        });
        resp
    }

    fn route(
        &self,
        method: &str,
        path: &str,
        q: &BTreeMap<String, String>,
        ctype: &str,
        accept: &str,
        body: &Bytes,
    ) -> Resp {
        let repr = negotiate(accept);
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let port = self.st().port;
        match (method, segs.as_slice()) {
            ("GET", ["version"]) => respond(
                200,
                json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0-gpuscout-standin",
                       "platform": "linux/amd64", "goVersion": "go1.23"}),
            ),
            ("GET", ["api"]) => respond(
                200,
                json!({"kind": "APIVersions", "versions": ["v1"],
                       "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": format!("127.0.0.1:{port}")}]}),
            ),
            ("GET", ["apis"]) => respond(
                200,
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [{
                    "name": "apiextensions.k8s.io",
                    "versions": [{"groupVersion": "apiextensions.k8s.io/v1", "version": "v1"}],
                    "preferredVersion": {"groupVersion": "apiextensions.k8s.io/v1", "version": "v1"}}, {
                    "name": "apps",
                    "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
                    "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}, {
                    "name": "nfd.k8s-sigs.io",
                    "versions": [{"groupVersion": "nfd.k8s-sigs.io/v1alpha1", "version": "v1alpha1"}],
                    "preferredVersion": {"groupVersion": "nfd.k8s-sigs.io/v1alpha1", "version": "v1alpha1"}}]}),
            ),
            ("GET", ["api", "v1"]) => respond(
                200,
                json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                    {"name": "nodes", "singularName": "node", "namespaced": false, "kind": "Node",
                     "verbs": ["get", "list", "patch", "update", "watch"], "shortNames": ["no"]},
                    {"name": "events", "singularName": "event", "namespaced": true, "kind": "Event",
                     "verbs": ["create", "get", "list"], "shortNames": ["ev"]},
                    {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
                     "verbs": ["list"], "shortNames": ["po"]}]}),
            ),
            ("GET", ["apis", "nfd.k8s-sigs.io", "v1alpha1"]) => respond(
                200,
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "nfd.k8s-sigs.io/v1alpha1",
                       "resources": [{"name": "nodefeatures", "singularName": "nodefeature", "namespaced": true,
                                      "kind": "NodeFeature", "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]},
                                     {"name": "nodefeaturerules", "singularName": "nodefeaturerule", "namespaced": false,
                                      "kind": "NodeFeatureRule", "verbs": ["get", "list"], "shortNames": ["nfr"]}]}),
            ),
            ("GET", ["apis", "apiextensions.k8s.io", "v1"]) => respond(
                200,
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apiextensions.k8s.io/v1",
                       "resources": [{"name": "customresourcedefinitions", "singularName": "customresourcedefinition",
                                      "namespaced": false, "kind": "CustomResourceDefinition",
                                      "verbs": ["get", "list"], "shortNames": ["crd", "crds"]}]}),
            ),
            // The NFD kinds this stand-in serves, as CRDs (metadata and names only).
            (
                "GET",
                [
                    "apis",
                    "apiextensions.k8s.io",
                    "v1",
                    "customresourcedefinitions",
                    name,
                ],
            ) => match *name {
                "nodefeatures.nfd.k8s-sigs.io" | "nodefeaturerules.nfd.k8s-sigs.io" => {
                    let plural = name.split('.').next().unwrap_or_default();
                    let kind = if plural == "nodefeatures" {
                        "NodeFeature"
                    } else {
                        "NodeFeatureRule"
                    };
                    respond(
                        200,
                        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                               "metadata": {"name": name},
                               "spec": {"group": "nfd.k8s-sigs.io", "names": {"plural": plural, "kind": kind},
                                        "scope": if plural == "nodefeatures" { "Namespaced" } else { "Cluster" }}}),
                    )
                }
                _ => status(
                    404,
                    "NotFound",
                    &format!("customresourcedefinitions.apiextensions.k8s.io \"{name}\" not found"),
                ),
            },
            ("GET", ["apis", "apps", "v1"]) => respond(
                200,
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1",
                       "resources": [{"name": "daemonsets", "singularName": "daemonset", "namespaced": true,
                                      "kind": "DaemonSet", "verbs": ["get", "list"], "shortNames": ["ds"]}]}),
            ),
            ("GET", ["apis", "apps", "v1", "daemonsets"]) => {
                let st = self.st();
                respond(
                    200,
                    json!({"kind": "DaemonSetList", "apiVersion": "apps/v1",
                           "metadata": {"resourceVersion": st.rv.to_string()}, "items": st.daemonsets}),
                )
            }
            ("GET", ["apis", "apps", "v1", "namespaces", ns, "daemonsets"]) => {
                let st = self.st();
                let items: Vec<&Value> = st
                    .daemonsets
                    .iter()
                    .filter(|d| d["metadata"]["namespace"] == *ns)
                    .collect();
                respond(
                    200,
                    json!({"kind": "DaemonSetList", "apiVersion": "apps/v1",
                           "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
                )
            }
            ("GET", ["apis", "nfd.k8s-sigs.io", "v1alpha1", "nodefeaturerules"]) => {
                let st = self.st();
                respond(
                    200,
                    json!({"kind": "NodeFeatureRuleList", "apiVersion": "nfd.k8s-sigs.io/v1alpha1",
                           "metadata": {"resourceVersion": st.rv.to_string()}, "items": st.nodefeaturerules}),
                )
            }
            ("GET" | "PATCH", ["api", "v1", "nodes", ..]) if repr.is_none() => not_acceptable(
                "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf",
            ),
            ("GET", ["api", "v1", "nodes"]) => {
                let name = match name_selector(q) {
                    Ok(n) => n,
                    Err(m) => return status(400, "BadRequest", &m),
                };
                let watch = q.get("watch").is_some_and(|v| v == "true" || v == "1");
                let meta_only = match (repr, watch) {
                    (Some(Repr::Full), _) => false,
                    (Some(Repr::Meta), true) | (Some(Repr::MetaList), false) => true,
                    (Some(Repr::Meta), false) => {
                        return not_acceptable(
                            "you requested PartialObjectMetadata, but the requested object is a list (*v1.NodeList)",
                        );
                    }
                    _ => {
                        return not_acceptable(
                            "you requested PartialObjectMetadataList, but the requested object is not a list (*v1.Node)",
                        );
                    }
                };
                if watch {
                    return self.watch_nodes(name, meta_only, q);
                }
                self.list_nodes(name, meta_only, q)
            }
            ("GET" | "PATCH", ["api", "v1", "nodes", name]) => {
                let meta_only = match repr {
                    Some(Repr::Meta) => true,
                    Some(Repr::Full) => false,
                    _ => {
                        return not_acceptable(
                            "you requested PartialObjectMetadataList, but the requested object is not a list (*v1.Node)",
                        );
                    }
                };
                if method == "PATCH" {
                    return self.patch_node(name, q, ctype, body, meta_only);
                }
                match self.st().nodes.get(*name) {
                    Some(n) => respond(200, node_json(n, meta_only)),
                    None => status(404, "NotFound", &format!("nodes \"{name}\" not found")),
                }
            }
            ("GET", ["api", "v1", "namespaces", ns, "pods"]) => {
                let meta_only = matches!(repr, Some(Repr::Meta | Repr::MetaList));
                let sel = match label_selector(q) {
                    Ok(s) => s,
                    Err(m) => return status(400, "BadRequest", &m),
                };
                let st = self.st();
                let items: Vec<Value> = st
                    .pods
                    .iter()
                    .filter(|((pns, _), labels)| {
                        pns == ns && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
                    })
                    .map(|((pns, name), labels)| {
                        let meta = json!({"name": name, "namespace": pns, "labels": labels,
                                          "uid": format!("pod-{name}"), "resourceVersion": st.rv.to_string()});
                        if meta_only {
                            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta})
                        } else {
                            json!({"kind": "Pod", "apiVersion": "v1", "metadata": meta, "spec": {"containers": []}})
                        }
                    })
                    .collect();
                let (kind, api) = if meta_only {
                    ("PartialObjectMetadataList", "meta.k8s.io/v1")
                } else {
                    ("PodList", "v1")
                };
                respond(
                    200,
                    json!({"kind": kind, "apiVersion": api,
                           "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
                )
            }
            (
                "DELETE",
                [
                    "apis",
                    "nfd.k8s-sigs.io",
                    "v1alpha1",
                    "namespaces",
                    ns,
                    "nodefeatures",
                    name,
                ],
            ) => {
                let mut st = self.st();
                match st
                    .nodefeatures
                    .remove(&((*ns).to_owned(), (*name).to_owned()))
                {
                    Some(_) => {
                        st.rv += 1;
                        respond(
                            200,
                            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                   "details": {"name": name, "group": "nfd.k8s-sigs.io", "kind": "nodefeatures"}}),
                        )
                    }
                    None => status(
                        404,
                        "NotFound",
                        &format!("nodefeatures.nfd.k8s-sigs.io \"{name}\" not found"),
                    ),
                }
            }
            ("POST", ["apis", "authentication.k8s.io", "v1", "tokenreviews"]) => {
                let Ok(mut tr) = serde_json::from_slice::<Value>(body) else {
                    return status(400, "BadRequest", "TokenReview body is not JSON");
                };
                let token = tr["spec"]["token"].as_str().unwrap_or("").to_owned();
                let st = self.st();
                tr["status"] = match st.tokens.get(&token) {
                    Some((user, groups)) => json!({"authenticated": true,
                        "user": {"username": user, "uid": format!("uid-{user}"), "groups": groups}}),
                    None => json!({"authenticated": false, "error": "invalid bearer token"}),
                };
                respond(201, tr)
            }
            ("POST", ["apis", "authorization.k8s.io", "v1", "subjectaccessreviews"]) => {
                let Ok(mut sar) = serde_json::from_slice::<Value>(body) else {
                    return status(400, "BadRequest", "SubjectAccessReview body is not JSON");
                };
                let mut st = self.st();
                st.sars.push(sar["spec"].clone());
                let spec = &sar["spec"];
                let nr = &spec["nonResourceAttributes"];
                let allowed = nr["path"] == "/metrics"
                    && nr["verb"] == "get"
                    && spec["user"]
                        .as_str()
                        .is_some_and(|u| st.metrics_readers.contains(u));
                sar["status"] = json!({"allowed": allowed});
                respond(201, sar)
            }
            ("POST", ["api", "v1", "namespaces", ns, "events"]) => {
                let Ok(mut ev) = serde_json::from_slice::<Value>(body) else {
                    return status(400, "BadRequest", "event body is not JSON");
                };
                let mut st = self.st();
                st.rv += 1;
                ev["metadata"]["namespace"] = json!(ns);
                ev["metadata"]["resourceVersion"] = json!(st.rv.to_string());
                if ev["metadata"]["name"].as_str().is_none_or(str::is_empty) {
                    let g = ev["metadata"]["generateName"]
                        .as_str()
                        .unwrap_or("event.")
                        .to_owned();
                    ev["metadata"]["name"] = json!(format!("{g}{:05}", st.rv));
                }
                st.events.push(ev.clone());
                respond(201, ev)
            }
            ("GET", ["api", "v1", "namespaces", ns, "events"]) => {
                let items: Vec<Value> = self
                    .st()
                    .events
                    .iter()
                    .filter(|e| e["metadata"]["namespace"] == *ns)
                    .cloned()
                    .collect();
                respond(
                    200,
                    json!({"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": items}),
                )
            }
            (
                "GET",
                [
                    "apis",
                    "nfd.k8s-sigs.io",
                    "v1alpha1",
                    "namespaces",
                    ns,
                    "nodefeatures",
                    name,
                ],
            ) => {
                match self
                    .st()
                    .nodefeatures
                    .get(&((*ns).to_owned(), (*name).to_owned()))
                {
                    Some(v) => respond(200, v.clone()),
                    None => status(
                        404,
                        "NotFound",
                        &format!("nodefeatures.nfd.k8s-sigs.io \"{name}\" not found"),
                    ),
                }
            }
            (
                "GET",
                [
                    "apis",
                    "nfd.k8s-sigs.io",
                    "v1alpha1",
                    "namespaces",
                    ns,
                    "nodefeatures",
                ],
            ) => {
                let items: Vec<Value> = self
                    .st()
                    .nodefeatures
                    .iter()
                    .filter(|((n, _), _)| n == ns)
                    .map(|(_, v)| v.clone())
                    .collect();
                respond(
                    200,
                    json!({"kind": "NodeFeatureList", "apiVersion": "nfd.k8s-sigs.io/v1alpha1", "metadata": {}, "items": items}),
                )
            }
            (
                "PATCH",
                [
                    "apis",
                    "nfd.k8s-sigs.io",
                    "v1alpha1",
                    "namespaces",
                    ns,
                    "nodefeatures",
                    name,
                ],
            ) => {
                if !ctype.starts_with("application/apply-patch+yaml") {
                    return status(
                        415,
                        "UnsupportedMediaType",
                        "stand-in: NodeFeatures take apply patches only",
                    );
                }
                let Ok(mut obj) = serde_norway::from_slice::<Value>(body) else {
                    return status(400, "BadRequest", "apply body is not YAML");
                };
                if obj["metadata"]["name"] != *name {
                    return status(400, "BadRequest", "metadata.name does not match the URL");
                }
                let mut st = self.st();
                let key = ((*ns).to_owned(), (*name).to_owned());
                let old = st.nodefeatures.get(&key).cloned();
                let same = old.as_ref().is_some_and(|o| {
                    o["spec"] == obj["spec"] && o["metadata"]["labels"] == obj["metadata"]["labels"]
                });
                if same {
                    return respond(200, old.unwrap_or_default());
                }
                st.rv += 1;
                obj["metadata"]["namespace"] = json!(ns);
                obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
                obj["metadata"]["uid"] = json!(format!("nf-{}", st.rv));
                st.nodefeatures.insert(key, obj.clone());
                respond(if old.is_some() { 200 } else { 201 }, obj)
            }
            _ => status(
                404,
                "NotFound",
                &format!("the server could not find the requested resource ({method} {path})"),
            ),
        }
    }

    fn list_nodes(
        &self,
        name: Option<String>,
        meta_only: bool,
        q: &BTreeMap<String, String>,
    ) -> Resp {
        let st = self.st();
        let limit = q
            .get("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|l| *l > 0);
        // Continue token: "<rv>:<last name>" (opaque to clients, as the apiserver's).
        let after = q
            .get("continue")
            .filter(|c| !c.is_empty())
            .and_then(|c| c.split_once(':'))
            .map(|(_, last)| last.to_owned());
        let matching: Vec<&NodeObj> = st
            .nodes
            .values()
            .filter(|n| name.as_ref().is_none_or(|x| *x == n.name))
            .filter(|n| after.as_ref().is_none_or(|a| n.name > *a))
            .collect();
        let (page, rest) = match limit {
            Some(l) if matching.len() > l => (&matching[..l], matching.len() - l),
            _ => (&matching[..], 0),
        };
        let items: Vec<Value> = page.iter().map(|n| node_json(n, meta_only)).collect();
        let (kind, api) = if meta_only {
            ("PartialObjectMetadataList", "meta.k8s.io/v1")
        } else {
            ("NodeList", "v1")
        };
        let mut meta = json!({"resourceVersion": st.rv.to_string()});
        if rest > 0 {
            let last = page.last().map(|n| n.name.as_str()).unwrap_or_default();
            meta["continue"] = json!(format!("{}:{last}", st.rv));
            // The apiserver counts the rest only for a list without selectors.
            if name.is_none() {
                meta["remainingItemCount"] = json!(rest);
            }
        }
        respond(
            200,
            json!({"kind": kind, "apiVersion": api, "metadata": meta, "items": items}),
        )
    }

    fn watch_nodes(
        &self,
        name: Option<String>,
        meta_only: bool,
        q: &BTreeMap<String, String>,
    ) -> Resp {
        let (tx, rx) = mpsc::unbounded_channel();
        let rv = q.get("resourceVersion").cloned().unwrap_or_default();
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(1800);
        let initial_events = q.get("sendInitialEvents").is_some_and(|v| v == "true");
        let mut st = self.st();
        let matches = |n: &NodeObj| name.as_ref().is_none_or(|x| *x == n.name);
        let min_rv;
        if rv.is_empty() || rv == "0" {
            for n in st.nodes.values().filter(|n| matches(n)) {
                let _ = tx.send(watch_line("ADDED", n, meta_only));
            }
            min_rv = st.rv;
        } else {
            let Ok(from) = rv.parse::<u64>() else {
                return status(400, "BadRequest", "resourceVersion is not a number");
            };
            if from > st.rv && initial_events {
                // The watch cache blocks up to 3 s for the version, then sends the error.
                drop(st);
                let me = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(TOO_LARGE_WAIT).await;
                    let current = me.st().rv;
                    let mut s = json!({"type": "ERROR", "object": too_large_status(from, current)})
                        .to_string();
                    s.push('\n');
                    let _ = tx.send(Bytes::from(s));
                });
                return http::Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(ChanBody::stream(rx))
                    .unwrap_or_else(|_| http::Response::new(ChanBody::full("")));
            }
            if from < st.compacted_to {
                return error_watch(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "reason": "Expired", "code": 410,
                    "message": format!("too old resource version: {from} ({})", st.compacted_to)}));
            }
            // A version newer than the server's is accepted and stays silent: only events
            // above it are ever sent (the watch cache's behaviour without sendInitialEvents).
            for (erv, kind, n) in st.history.iter() {
                if *erv > from && matches(n) {
                    let _ = tx.send(watch_line(kind, n, meta_only));
                }
            }
            min_rv = from;
        }
        st.next_watcher += 1;
        let id = st.next_watcher;
        let every = st.bookmark_every.unwrap_or(Duration::from_secs(60));
        st.watchers.push(Watcher {
            name,
            meta_only,
            tx,
            id,
            min_rv,
        });
        drop(st);
        let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
        let me = self.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let deadline = start + Duration::from_secs(timeout);
            // Like the watch cache: a BOOKMARK about every `every`, and one 2 s before the
            // deadline so the client resumes from a recent point instead of hitting 410.
            let pre_deadline = deadline
                .checked_sub(Duration::from_secs(2))
                .unwrap_or(start);
            let mut next = (start + every).min(pre_deadline);
            loop {
                tokio::time::sleep_until(next).await;
                let st = me.st();
                let rv = st.rv;
                let Some(w) = st.watchers.iter().find(|w| w.id == id) else {
                    return;
                };
                if bookmarks && rv > w.min_rv {
                    let (kind, api) = if w.meta_only {
                        ("PartialObjectMetadata", "meta.k8s.io/v1")
                    } else {
                        ("Node", "v1")
                    };
                    let mut line =
                        json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api,
                        "metadata": {"resourceVersion": rv.to_string()}}})
                        .to_string();
                    line.push('\n');
                    let _ = w.tx.send(Bytes::from(line));
                }
                if next >= pre_deadline {
                    break;
                }
                next = (next + every).min(pre_deadline);
            }
            tokio::time::sleep_until(deadline).await;
            me.st().watchers.retain(|w| w.id != id);
        });
        http::Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .header("transfer-encoding", "chunked")
            .body(ChanBody::stream(rx))
            .unwrap_or_else(|_| http::Response::new(ChanBody::full("")))
    }

    fn patch_node(
        &self,
        name: &str,
        q: &BTreeMap<String, String>,
        ctype: &str,
        body: &Bytes,
        meta_only: bool,
    ) -> Resp {
        let manager = q.get("fieldManager").cloned();
        let mut st = self.st();
        let ctype = ctype.split(';').next().unwrap_or("").trim();
        let result = match ctype {
            "application/apply-patch+yaml" => apply_node(&mut st, name, manager, q, body),
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                merge_node(
                    &mut st,
                    name,
                    manager.unwrap_or_else(|| "unknown".into()),
                    body,
                )
            }
            "application/json-patch+json" => json_patch_node(
                &mut st,
                name,
                manager.unwrap_or_else(|| "unknown".into()),
                body,
            ),
            other => Err(status(
                415,
                "UnsupportedMediaType",
                &format!("unsupported patch type {other}"),
            )),
        };
        match result {
            Ok(n) => respond(200, node_json(&n, meta_only)),
            Err(r) => r,
        }
    }
}

fn not_found(name: &str) -> Resp {
    status(404, "NotFound", &format!("nodes \"{name}\" not found"))
}

fn string_map(v: &Value) -> Result<BTreeMap<String, Option<String>>, Resp> {
    let Some(obj) = v.as_object() else {
        return if v.is_null() {
            Ok(BTreeMap::new())
        } else {
            Err(status(400, "BadRequest", "labels must be a map"))
        };
    };
    obj.iter()
        .map(|(k, v)| match v {
            Value::Null => Ok((k.clone(), None)),
            Value::String(s) => Ok((k.clone(), Some(s.clone()))),
            _ => Err(status(
                422,
                "Invalid",
                &format!("label {k}: value must be a string"),
            )),
        })
        .collect()
}

fn apply_node(
    st: &mut State,
    name: &str,
    manager: Option<String>,
    q: &BTreeMap<String, String>,
    body: &Bytes,
) -> Result<NodeObj, Resp> {
    let Some(manager) = manager.filter(|m| !m.is_empty()) else {
        return Err(status(
            400,
            "BadRequest",
            "PATCH with apply requires fieldManager",
        ));
    };
    let Ok(obj) = serde_norway::from_slice::<Value>(body) else {
        return Err(status(400, "BadRequest", "apply body is not YAML"));
    };
    if obj["metadata"]["name"] != name {
        return Err(status(
            400,
            "BadRequest",
            "metadata.name does not match the URL",
        ));
    }
    let labels: BTreeMap<String, String> = string_map(&obj["metadata"]["labels"])?
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    check_labels(name, labels.iter().map(|(k, v)| (k, Some(v))))?;
    let force = q.get("force").is_some_and(|f| f == "true");
    if !st.nodes.contains_key(name) {
        if !st.allow_create {
            return Err(status(
                403,
                "Forbidden",
                &format!(
                    "nodes \"{name}\" is forbidden: User \"system:serviceaccount:gpu-system:gpuscout\" cannot create resource \"nodes\" in API group \"\" at the cluster scope"
                ),
            ));
        }
        st.uids += 1;
        st.rv += 1;
        let mut n = NodeObj {
            name: name.to_owned(),
            uid: format!("created-by-apply-{}", st.uids),
            rv: st.rv,
            owned: Default::default(),
            annotations: BTreeMap::new(),
            node_info: NodeInfo::default(),
        };
        let _ = n.owned.apply(&manager, &labels, true);
        st.nodes.insert(name.to_owned(), n.clone());
        st.emit("ADDED", n.clone());
        return Ok(n);
    }
    let mut conflict = None;
    let n = st.mutate_node(name, |n| {
        let before = n.owned.clone();
        if let Err(c) = n.owned.apply(&manager, &labels, force) {
            conflict = Some(c);
            return false;
        }
        n.owned != before
    });
    if let Some(c) = conflict {
        let list: Vec<String> = c
            .iter()
            .map(|(k, m)| format!("conflict with \"{m}\": .metadata.labels.{k}"))
            .collect();
        return Err(status(
            409,
            "Conflict",
            &format!(
                "Apply failed with {} conflicts: {}",
                c.len(),
                list.join(", ")
            ),
        ));
    }
    n.ok_or_else(|| not_found(name))
}

fn merge_node(st: &mut State, name: &str, manager: String, body: &Bytes) -> Result<NodeObj, Resp> {
    let Ok(patch) = serde_json::from_slice::<Value>(body) else {
        return Err(status(400, "BadRequest", "patch body is not JSON"));
    };
    let Some(current) = st.nodes.get(name) else {
        return Err(not_found(name));
    };
    if let Some(rv) = patch["metadata"]["resourceVersion"].as_str()
        && rv != current.rv.to_string()
    {
        return Err(status(
            409,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on nodes \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        ));
    }
    let labels = string_map(&patch["metadata"]["labels"])?;
    check_labels(name, labels.iter().map(|(k, v)| (k, v.as_ref())))?;
    let annotations = string_map(&patch["metadata"]["annotations"])?;
    write_node(st, name, &manager, &labels, &annotations)
}

/// Applies label (under `manager`'s ownership) and annotation changes to a node; `None` removes
/// a key. Returns the node and whether anything changed, or 404.
fn write_node(
    st: &mut State,
    name: &str,
    manager: &str,
    labels: &BTreeMap<String, Option<String>>,
    annotations: &BTreeMap<String, Option<String>>,
) -> Result<NodeObj, Resp> {
    st.mutate_node(name, |n| {
        let before = (n.owned.clone(), n.annotations.clone());
        n.owned.update(manager, labels);
        for (k, v) in annotations {
            match v {
                Some(v) => {
                    n.annotations.insert(k.clone(), v.clone());
                }
                None => {
                    n.annotations.remove(k);
                }
            }
        }
        (n.owned.clone(), n.annotations.clone()) != before
    })
    .ok_or_else(|| not_found(name))
}

/// RFC 6901 token unescaping (`~1` is `/`, `~0` is `~`).
fn unescape(t: &str) -> String {
    t.replace("~1", "/").replace("~0", "~")
}

fn json_patch_node(
    st: &mut State,
    name: &str,
    manager: String,
    body: &Bytes,
) -> Result<NodeObj, Resp> {
    let Ok(Value::Array(ops)) = serde_json::from_slice::<Value>(body) else {
        return Err(status(400, "BadRequest", "JSON patch must be an array"));
    };
    let Some(current) = st.nodes.get(name).cloned() else {
        return Err(not_found(name));
    };
    let mut labels: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut annotations: BTreeMap<String, Option<String>> = BTreeMap::new();
    for op in &ops {
        let (Some(kind), Some(path)) = (op["op"].as_str(), op["path"].as_str()) else {
            return Err(status(400, "BadRequest", "each op needs op and path"));
        };
        let value = op["value"].as_str().map(str::to_owned);
        if path == "/metadata/resourceVersion" && kind == "test" {
            if value.as_deref() != Some(current.rv.to_string().as_str()) {
                return Err(status(
                    422,
                    "Invalid",
                    "test operation failed: resourceVersion",
                ));
            }
            continue;
        }
        let (target, key, cur) = if let Some(k) = path.strip_prefix("/metadata/labels/") {
            let k = unescape(k);
            let c = current.owned.labels.get(&k).cloned();
            (&mut labels, k, c)
        } else if let Some(k) = path.strip_prefix("/metadata/annotations/") {
            let k = unescape(k);
            let c = current.annotations.get(&k).cloned();
            (&mut annotations, k, c)
        } else {
            return Err(status(
                422,
                "Invalid",
                &format!("stand-in: unsupported JSON patch path {path}"),
            ));
        };
        match kind {
            "add" | "replace" => {
                if kind == "replace" && cur.is_none() {
                    return Err(status(
                        422,
                        "Invalid",
                        &format!("replace of missing {path}"),
                    ));
                }
                target.insert(key, value);
            }
            "remove" => {
                if cur.is_none() {
                    return Err(status(422, "Invalid", &format!("remove of missing {path}")));
                }
                target.insert(key, None);
            }
            "test" => {
                if cur != value {
                    return Err(status(
                        422,
                        "Invalid",
                        &format!("test operation failed: {path}"),
                    ));
                }
            }
            other => return Err(status(422, "Invalid", &format!("unsupported op {other}"))),
        }
    }
    check_labels(name, labels.iter().map(|(k, v)| (k, v.as_ref())))?;
    write_node(st, name, &manager, &labels, &annotations)
}
