//! The API server's side: routes, authorization attributes, apply, logs and the
//! service proxy.

use super::*;

pub(crate) fn images(pod: &Value) -> Vec<String> {
    pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["image"].as_str().map(str::to_owned))
        .collect()
}

pub(crate) fn status(code: u16, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response()
}

pub(crate) fn not_found(r: &Resource, name: &str) -> Response {
    status(
        404,
        "NotFound",
        format!("{} \"{name}\" not found", r.qualified()),
    )
}

/// A parsed request path.
pub(crate) struct Target<'a> {
    resource: &'static Resource,
    namespace: String,
    name: Option<String>,
    /// `log`, or `proxy` with the rest of the path.
    sub: Option<(&'a str, String)>,
}

pub(crate) fn route(path: &str) -> Option<Target<'_>> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let ["namespaces", ns, plural, rest @ ..] = rest else {
        return None;
    };
    let resource = resource(group, version, plural)?;
    let (name, sub) = match rest {
        [] => (None, None),
        [name] => (Some((*name).to_owned()), None),
        [name, sub, tail @ ..] => (Some((*name).to_owned()), Some((*sub, tail.join("/")))),
    };
    Some(Target {
        resource,
        namespace: (*ns).to_owned(),
        name,
        sub,
    })
}

pub(crate) fn query_map(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Percent-decoding of a query component (`+` is a space).
pub(crate) fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                None => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `labels` match an equality-based selector (`a=b,c!=d,e`).
pub(crate) fn matches(selector: &str, labels: &Value) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            labels[k.trim()].as_str() != Some(v.trim())
        } else if let Some((k, v)) = term.split_once('=') {
            let k = k.trim().trim_end_matches('=');
            labels[k].as_str() == Some(v.trim_start_matches('=').trim())
        } else {
            labels.get(term.trim()).is_some()
        }
    })
}

pub(crate) fn serve(
    state: &Arc<Mutex<Cluster>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut c = state.lock().unwrap_or_else(|e| e.into_inner());
    let path = uri.path().to_owned();
    let target = route(&path);
    let attributes = target
        .as_ref()
        .map(|t| authorize(&c, &method, t))
        .unwrap_or_default();
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"));
    let response = if !authorized {
        status(401, "Unauthorized", "Unauthorized".to_owned())
    } else if let Some(denied) = attributes.iter().find(|a| c.forbidden.contains(a)) {
        status(
            403,
            "Forbidden",
            format!(
                "{} is forbidden: User \"system:serviceaccount:hostplane:listener\" cannot {} \
                 resource \"{}\" in API group \"{}\" in the namespace \"{}\"",
                path, denied.verb, denied.resource, denied.group, denied.namespace
            ),
        )
    } else if path == "/version" {
        axum::Json(json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-hostplane-fake",
            "platform": "linux/amd64",
        }))
        .into_response()
    } else {
        match target {
            Some(t) if !c.namespaces.contains(&t.namespace) => status(
                404,
                "NotFound",
                format!("namespaces \"{}\" not found", t.namespace),
            ),
            Some(t) => handle(&mut c, state, &method, &uri, &headers, &body, t),
            None => status(
                404,
                "NotFound",
                "the server could not find the requested resource".into(),
            ),
        }
    };
    c.requests.push(Logged {
        method: method.to_string(),
        path,
        query: uri.query().unwrap_or("").to_owned(),
        status: response.status().as_u16(),
        attributes,
    });
    response
}

/// The attributes Kubernetes authorizes a request as. A server-side apply that creates
/// its object is checked as `patch` and as `create`.
pub(crate) fn authorize(c: &Cluster, method: &Method, t: &Target<'_>) -> Vec<Attributes> {
    let r = t.resource;
    let mut resource = r.plural.to_owned();
    if let Some((sub, _)) = &t.sub {
        resource = format!("{resource}/{sub}");
    }
    let verbs: Vec<&str> = match (method.as_str(), &t.name) {
        ("GET", None) => vec!["list"],
        ("GET", Some(_)) => vec!["get"],
        ("POST", _) => vec!["create"],
        ("PUT", _) => vec!["update"],
        ("PATCH", Some(name)) => {
            let exists = c.objects.contains_key(&Cluster::key(r, &t.namespace, name));
            if exists {
                vec!["patch"]
            } else {
                vec!["patch", "create"]
            }
        }
        ("DELETE", None) => vec!["deletecollection"],
        ("DELETE", Some(_)) => vec!["delete"],
        _ => vec![],
    };
    verbs
        .into_iter()
        .map(|v| Attributes {
            verb: v.to_owned(),
            group: r.group_version().0.to_owned(),
            resource: resource.clone(),
            namespace: t.namespace.clone(),
        })
        .collect()
}

pub(crate) fn handle(
    c: &mut Cluster,
    state: &Arc<Mutex<Cluster>>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    t: Target<'_>,
) -> Response {
    let r = t.resource;
    let ns = t.namespace.as_str();
    let query = query_map(uri);
    let selector = query.get("labelSelector").cloned().unwrap_or_default();
    match (method.as_str(), t.name.as_deref(), &t.sub) {
        ("GET", None, None) => {
            let items: Vec<Value> = c
                .of(r, ns)
                .filter(|o| matches(&selector, &o["metadata"]["labels"]))
                .cloned()
                .collect();
            axum::Json(json!({
                "apiVersion": r.api_version(), "kind": format!("{}List", r.kind),
                "metadata": {"resourceVersion": c.resource_version.to_string()},
                "items": items,
            }))
            .into_response()
        }
        ("GET", Some(name), None) => match c.objects.get(&Cluster::key(r, ns, name)) {
            Some(o) => axum::Json(o.clone()).into_response(),
            None => not_found(r, name),
        },
        ("PATCH", Some(name), None) => apply(c, r, ns, name, &query, headers, body),
        ("DELETE", Some(name), None) => match c.remove(r, ns, name) {
            Some(o) => axum::Json(o).into_response(),
            None => not_found(r, name),
        },
        ("DELETE", None, None) => {
            let names: Vec<String> = c
                .of(r, ns)
                .filter(|o| matches(&selector, &o["metadata"]["labels"]))
                .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_owned))
                .collect();
            let items: Vec<Value> = names.iter().filter_map(|n| c.remove(r, ns, n)).collect();
            axum::Json(json!({
                "apiVersion": r.api_version(), "kind": format!("{}List", r.kind),
                "metadata": {}, "items": items,
            }))
            .into_response()
        }
        ("GET", Some(name), Some(("log", _))) if r.plural == "pods" => {
            pod_logs(c, state, ns, name, &query)
        }
        ("GET", Some(name), Some(("proxy", _))) if r.plural == "services" => {
            service_proxy(c, ns, name)
        }
        _ => status(
            405,
            "MethodNotAllowed",
            format!("the fake does not serve {method} {}", uri.path()),
        ),
    }
}

/// Server-side apply with one field manager: the applied object is the whole intent for
/// the fields it sets; `status` and the server's metadata stay.
pub(crate) fn apply(
    c: &mut Cluster,
    r: &'static Resource,
    ns: &str,
    name: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type != "application/apply-patch+yaml" {
        return status(
            415,
            "UnsupportedMediaType",
            format!("the fake only serves server-side apply, not {content_type:?}"),
        );
    }
    let Some(manager) = query.get("fieldManager").filter(|m| !m.is_empty()) else {
        return status(
            422,
            "Invalid",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(),
        );
    };
    let Ok(applied) = serde_json::from_slice::<Value>(body) else {
        return status(
            400,
            "BadRequest",
            "the fake reads apply bodies as JSON".into(),
        );
    };
    if applied["apiVersion"] != json!(r.api_version())
        || applied["kind"] != json!(r.kind)
        || applied["metadata"]["name"] != json!(name)
        || applied["metadata"]["namespace"]
            .as_str()
            .is_some_and(|n| n != ns)
    {
        return status(
            400,
            "BadRequest",
            format!("the object does not match {} {ns}/{name}", r.kind),
        );
    }
    let key = Cluster::key(r, ns, name);
    let existing = c.objects.get(&key).cloned();
    let created = existing.is_none();
    let mut obj = existing.unwrap_or_else(|| {
        json!({
            "apiVersion": r.api_version(), "kind": r.kind,
            "metadata": {
                "name": name, "namespace": ns,
                "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            },
        })
    });
    let spec_before = obj.get("spec").cloned();
    let Some(target) = obj.as_object_mut() else {
        unreachable!("objects are JSON objects")
    };
    // Fields the previous apply set and this one does not are removed.
    target.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
    if let Some(fields) = applied.as_object() {
        for (k, v) in fields {
            if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status") {
                target.insert(k.clone(), v.clone());
            }
        }
    }
    let meta = &mut obj["metadata"];
    for field in ["labels", "annotations"] {
        match applied["metadata"].get(field) {
            Some(v) => meta[field] = v.clone(),
            None => {
                meta.as_object_mut().map(|m| m.remove(field));
            }
        }
    }
    meta["managedFields"] = json!([{
        "manager": manager, "operation": "Apply", "apiVersion": r.api_version(),
        "fieldsType": "FieldsV1", "time": now(),
    }]);
    if r.generation {
        let generation = meta["generation"].as_i64().unwrap_or(0);
        if created || spec_before != obj.get("spec").cloned() {
            obj["metadata"]["generation"] = json!(generation + 1);
        }
    }
    if r.plural == "services" && obj["spec"]["clusterIP"].is_null() {
        obj["spec"]["clusterIP"] = json!(format!(
            "10.96.{}.{}",
            c.resource_version % 250,
            c.resource_version % 200 + 2
        ));
    }
    c.insert(r, ns, name, obj);
    let stored = c.objects.get(&key).cloned().unwrap_or(Value::Null);
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (code, axum::Json(stored)).into_response()
}

pub(crate) fn pod_logs(
    c: &Cluster,
    state: &Arc<Mutex<Cluster>>,
    ns: &str,
    name: &str,
    query: &HashMap<String, String>,
) -> Response {
    let key = (ns.to_owned(), name.to_owned());
    let Some(pod) = c.pods.get(&key) else {
        return not_found(resource_of_kind("Pod"), name);
    };
    let mut lines = pod.logs.clone();
    if let Some(tail) = query.get("tailLines").and_then(|t| t.parse::<usize>().ok()) {
        lines = lines.split_off(lines.len().saturating_sub(tail));
    }
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    if query.get("follow").map(String::as_str) != Some("true") {
        return text.into_response();
    }
    // Following: what is there, then each new line until the pod is gone.
    let first =
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(text)) });
    let rest = futures_util::stream::unfold(
        (state.clone(), key, pod.logs.len()),
        |(state, key, mut seen)| async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let c = state.lock().unwrap_or_else(|e| e.into_inner());
                let pod = c.pods.get(&key)?;
                if pod.logs.len() > seen {
                    let text: String = pod.logs[seen..].iter().map(|l| format!("{l}\n")).collect();
                    seen = pod.logs.len();
                    drop(c);
                    return Some((Ok(Bytes::from(text)), (state, key, seen)));
                }
            }
        },
    );
    Body::from_stream(futures_util::StreamExt::chain(first, rest)).into_response()
}

pub(crate) fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// `GET /api/v1/namespaces/NS/services/NAME[:PORT]/proxy/...`: answers for the pods
/// behind the Service, as `{"ok":true}` when one of them is ready.
pub(crate) fn service_proxy(c: &Cluster, ns: &str, name: &str) -> Response {
    let service = name
        .split(':')
        .find(|p| !matches!(*p, "http" | "https"))
        .unwrap_or(name);
    let r = resource_of_kind("Service");
    let Some(svc) = c.objects.get(&Cluster::key(r, ns, service)) else {
        return not_found(r, service);
    };
    let selector = &svc["spec"]["selector"];
    let selector: Vec<String> = selector
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    let behind: Vec<&Value> = c
        .of(resource_of_kind("Pod"), ns)
        .filter(|p| matches(&selector.join(","), &p["metadata"]["labels"]) && ready(p))
        .collect();
    let unhealthy = |p: &Value| {
        images(p)
            .iter()
            .any(|i| matches!(c.faults.get(i), Some(Fault::Unhealthy)))
    };
    if !behind.is_empty() && behind.iter().all(|p| unhealthy(p)) {
        return status(
            500,
            "InternalError",
            "the server answered 500 on /ok".into(),
        );
    }
    let serving = !behind.is_empty();
    if serving {
        axum::Json(json!({"ok": true})).into_response()
    } else {
        status(
            503,
            "ServiceUnavailable",
            format!("no endpoints available for service \"{service}\""),
        )
    }
}
