//! The simulated kubelet and controllers: pods for Deployments and StatefulSets,
//! readiness, statuses, PersistentVolumeClaims, and the LGP operator.

use super::*;

pub(crate) fn short_hash(v: &Value) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(v.to_string().as_bytes());
    digest.iter().take(5).map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Plays the controllers and the kubelet, every 50 ms.
pub(crate) async fn kubelet(cluster: Arc<Mutex<Cluster>>) {
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut c = cluster.lock().unwrap_or_else(|e| e.into_inner());
        let namespaces: Vec<String> = c.namespaces.iter().cloned().collect();
        for ns in &namespaces {
            lgp_operator(&mut c, ns);
            deployment_controller(&mut c, ns);
            statefulset_controller(&mut c, ns);
            job_controller(&mut c, ns);
            run_pods(&mut c, ns);
            workload_status(&mut c, ns);
        }
    }
}

pub(crate) fn owned_pods(c: &Cluster, ns: &str, kind: &str, name: &str) -> Vec<Value> {
    c.of(resource_of_kind("Pod"), ns)
        .filter(|p| owner(p) == Some((kind, name)))
        .cloned()
        .collect()
}

pub(crate) fn name_of(o: &Value) -> String {
    o["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

pub(crate) fn create_pod(
    c: &mut Cluster,
    ns: &str,
    pod_name: &str,
    template: &Value,
    owner: (&str, &str),
    extra: (&str, &str),
) {
    let mut labels = template["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    labels.insert(extra.0.to_owned(), json!(extra.1));
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": pod_name, "namespace": ns, "labels": labels,
            "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now(),
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner.0, "name": owner.1,
                                 "controller": true}],
        },
        "spec": template["spec"].clone(),
        "status": {"phase": "Pending"},
    });
    c.insert(resource_of_kind("Pod"), ns, pod_name, pod);
    c.pods.insert(
        (ns.to_owned(), pod_name.to_owned()),
        Pod {
            started: Instant::now(),
            logs: Vec::new(),
            started_logs: false,
        },
    );
}

/// Deployments: pods of the current template up to `replicas`; the old template's pods
/// go once the new ones are all ready (a rolling update that never drops below the
/// wanted count, as with `maxUnavailable: 0`).
pub(crate) fn deployment_controller(c: &mut Cluster, ns: &str) {
    let deployments: Vec<Value> = c.of(resource_of_kind("Deployment"), ns).cloned().collect();
    for d in deployments {
        let name = name_of(&d);
        let template = &d["spec"]["template"];
        let hash = short_hash(template);
        let wanted = usize::try_from(d["spec"]["replicas"].as_u64().unwrap_or(1)).unwrap_or(1);
        let pods = owned_pods(c, ns, "Deployment", &name);
        let (new, old): (Vec<&Value>, Vec<&Value>) = pods
            .iter()
            .partition(|p| p["metadata"]["labels"]["pod-template-hash"] == json!(hash));
        for _ in new.len()..wanted {
            let suffix = uuid::Uuid::new_v4().simple().to_string();
            let pod_name = format!("{name}-{hash}-{}", &suffix[..5]);
            create_pod(
                c,
                ns,
                &pod_name,
                template,
                ("Deployment", &name),
                ("pod-template-hash", &hash),
            );
        }
        for extra in new.iter().skip(wanted) {
            c.remove(resource_of_kind("Pod"), ns, &name_of(extra));
        }
        if new.len() >= wanted && new.iter().take(wanted).all(|p| ready(p)) {
            for p in old {
                c.remove(resource_of_kind("Pod"), ns, &name_of(p));
            }
        }
    }
}

/// Jobs: one pod each (as with `backoffLimit: 0`), and the Job's status from it:
/// `Complete` when it succeeded, `Failed` when it failed.
pub(crate) fn job_controller(c: &mut Cluster, ns: &str) {
    let jobs: Vec<Value> = c.of(resource_of_kind("Job"), ns).cloned().collect();
    for job in jobs {
        let name = name_of(&job);
        let pods = owned_pods(c, ns, "Job", &name);
        let Some(pod) = pods.first() else {
            if job["status"]["startTime"].is_null() {
                let suffix = uuid::Uuid::new_v4().simple().to_string();
                let pod_name = format!("{name}-{}", &suffix[..5]);
                let template = job["spec"]["template"].clone();
                create_pod(
                    c,
                    ns,
                    &pod_name,
                    &template,
                    ("Job", &name),
                    ("job-name", &name),
                );
                set_status(
                    c,
                    "Job",
                    ns,
                    &name,
                    json!({"startTime": now(), "active": 1}),
                );
            }
            continue;
        };
        let start = job["status"]["startTime"].clone();
        let status = match pod["status"]["phase"].as_str() {
            Some("Succeeded") => json!({
                "startTime": start, "succeeded": 1, "completionTime": now(),
                "conditions": [{"type": "Complete", "status": "True"}],
            }),
            Some("Failed") => json!({
                "startTime": start, "failed": 1,
                "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                "message": "Job has reached the specified backoff limit"}],
            }),
            _ => json!({"startTime": start, "active": 1}),
        };
        if job["status"] != status && job["status"]["completionTime"].is_null() {
            set_status(c, "Job", ns, &name, status);
        }
    }
}

/// A Job's pod, once it ran: it printed its image's lines and exited, with the fault's
/// code (`CrashLoop`) or 0; a container that succeeded leaves its last line as its
/// termination message (as a container writing `/dev/termination-log` would).
fn finished_job_pod(
    c: &mut Cluster,
    key: &(String, String),
    pod: &Value,
    fault: Option<&Fault>,
) -> Value {
    let (code, lines) = match fault {
        Some(Fault::CrashLoop { exit_code, logs }) => (*exit_code, logs.clone()),
        _ => (
            0,
            images(pod)
                .iter()
                .flat_map(|i| c.image_logs.get(i).cloned().unwrap_or_default())
                .collect(),
        ),
    };
    let last = lines.last().cloned().unwrap_or_default();
    if let Some(p) = c.pods.get_mut(key) {
        if !p.started_logs {
            p.logs.extend(lines);
            p.started_logs = true;
        }
    }
    let containers = pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut terminated =
        json!({"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" }});
    if code == 0 {
        terminated["message"] = json!(last);
    }
    json!({
        "phase": if code == 0 { "Succeeded" } else { "Failed" },
        "conditions": [{"type": "PodScheduled", "status": "True"}],
        "containerStatuses": containers.iter().map(|k| json!({
            "name": k["name"], "image": k["image"], "ready": false, "restartCount": 0,
            "state": {"terminated": terminated},
        })).collect::<Vec<_>>(),
    })
}

/// StatefulSets: pods `<name>-<i>`, replaced one by one on a new template, with a
/// PersistentVolumeClaim per claim template that outlives them (labelled with the
/// claim template's labels and the set's selector, as Kubernetes does).
pub(crate) fn statefulset_controller(c: &mut Cluster, ns: &str) {
    let sets: Vec<Value> = c.of(resource_of_kind("StatefulSet"), ns).cloned().collect();
    for s in sets {
        let name = name_of(&s);
        let template = &s["spec"]["template"];
        let hash = format!("{name}-{}", short_hash(template));
        let wanted = usize::try_from(s["spec"]["replicas"].as_u64().unwrap_or(1)).unwrap_or(1);
        for i in 0..wanted {
            let pod_name = format!("{name}-{i}");
            let key = Cluster::key(resource_of_kind("Pod"), ns, &pod_name);
            match c.objects.get(&key) {
                Some(p) if p["metadata"]["labels"]["controller-revision-hash"] != json!(hash) => {
                    c.remove(resource_of_kind("Pod"), ns, &pod_name);
                }
                Some(_) => {}
                None => {
                    for claim in s["spec"]["volumeClaimTemplates"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        let pvc_name = format!("{}-{pod_name}", name_of(claim));
                        let pvc_res = resource_of_kind("PersistentVolumeClaim");
                        if c.objects
                            .contains_key(&Cluster::key(pvc_res, ns, &pvc_name))
                        {
                            continue;
                        }
                        let mut labels = claim["metadata"]["labels"]
                            .as_object()
                            .cloned()
                            .unwrap_or_default();
                        if let Some(m) = s["spec"]["selector"]["matchLabels"].as_object() {
                            labels.extend(m.clone());
                        }
                        let pvc = json!({
                            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                            "metadata": {"name": pvc_name, "namespace": ns, "labels": labels,
                                         "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now()},
                            "spec": claim["spec"].clone(),
                            "status": {"phase": "Bound"},
                        });
                        c.insert(pvc_res, ns, &pvc_name, pvc);
                    }
                    create_pod(
                        c,
                        ns,
                        &pod_name,
                        template,
                        ("StatefulSet", &name),
                        ("controller-revision-hash", &hash),
                    );
                }
            }
        }
        for p in owned_pods(c, ns, "StatefulSet", &name) {
            let index = name_of(&p)
                .rsplit('-')
                .next()
                .and_then(|i| i.parse::<usize>().ok())
                .unwrap_or(usize::MAX);
            if index >= wanted {
                c.remove(resource_of_kind("Pod"), ns, &name_of(&p));
            }
        }
    }
}

pub(crate) fn set_status(c: &mut Cluster, kind: &str, ns: &str, name: &str, status: Value) {
    let r = resource_of_kind(kind);
    let key = Cluster::key(r, ns, name);
    let changed = c.objects.get(&key).is_some_and(|o| o["status"] != status);
    if changed {
        let version = c.next_version();
        if let Some(o) = c.objects.get_mut(&key) {
            o["status"] = status;
            o["metadata"]["resourceVersion"] = json!(version);
        }
    }
}

/// The kubelet: each pod runs, turns ready after the delay, or plays its image's fault.
pub(crate) fn run_pods(c: &mut Cluster, ns: &str) {
    let pods: Vec<Value> = c.of(resource_of_kind("Pod"), ns).cloned().collect();
    for pod in pods {
        let name = name_of(&pod);
        let key = (ns.to_owned(), name.clone());
        let Some(elapsed) = c.pods.get(&key).map(|p| p.started.elapsed()) else {
            continue;
        };
        let fault = images(&pod).iter().find_map(|i| c.faults.get(i)).cloned();
        let starting = elapsed < c.ready_after;
        let scheduled = json!({"type": "PodScheduled", "status": "True"});
        let containers = pod["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let statuses =
            |state: &dyn Fn(&Value) -> Value| -> Value { containers.iter().map(state).collect() };
        let status = match &fault {
            _ if !starting && owner(&pod).is_some_and(|(kind, _)| kind == "Job") => {
                if pod["status"]["phase"] == "Succeeded" || pod["status"]["phase"] == "Failed" {
                    continue;
                }
                finished_job_pod(c, &key, &pod, fault.as_ref())
            }
            Some(Fault::Unschedulable) => json!({
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                "message": "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."}],
            }),
            _ if starting => json!({
                "phase": "Pending",
                "conditions": [scheduled],
                "containerStatuses": statuses(&|k| json!({
                    "name": k["name"], "image": k["image"], "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": "ContainerCreating"}},
                })),
            }),
            Some(Fault::ImagePull) => {
                let reason = if elapsed < c.ready_after * 2 {
                    "ErrImagePull"
                } else {
                    "ImagePullBackOff"
                };
                let faults = c.faults.clone();
                json!({
                    "phase": "Pending",
                    "conditions": [scheduled, {"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
                    "containerStatuses": statuses(&|k| {
                        let image = k["image"].as_str().unwrap_or_default();
                        if matches!(faults.get(image), Some(Fault::ImagePull)) {
                            json!({"name": k["name"], "image": image, "ready": false, "restartCount": 0,
                                   "state": {"waiting": {"reason": reason,
                                   "message": format!("Back-off pulling image \"{image}\": ErrImagePull: failed to pull and unpack image \"{image}\": not found")}}})
                        } else {
                            json!({"name": k["name"], "image": image, "ready": false, "restartCount": 0,
                                   "state": {"waiting": {"reason": "PodInitializing"}}})
                        }
                    }),
                })
            }
            Some(Fault::CrashLoop { exit_code, logs }) => {
                if let Some(p) = c.pods.get_mut(&key) {
                    if !p.started_logs {
                        p.logs.extend(logs.iter().cloned());
                        p.started_logs = true;
                    }
                }
                let pod_name = name.clone();
                json!({
                    "phase": "Running",
                    "conditions": [scheduled, {"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
                    "containerStatuses": statuses(&|k| json!({
                        "name": k["name"], "image": k["image"], "ready": false, "restartCount": 3,
                        "state": {"waiting": {"reason": "CrashLoopBackOff",
                                  "message": format!("back-off 40s restarting failed container={} pod={pod_name}", k["name"].as_str().unwrap_or_default())}},
                        "lastState": {"terminated": {"exitCode": exit_code, "reason": "Error"}},
                    })),
                })
            }
            Some(Fault::Unhealthy) | None => {
                let lines: Vec<String> = images(&pod)
                    .iter()
                    .flat_map(|i| c.image_logs.get(i).cloned().unwrap_or_default())
                    .collect();
                if let Some(p) = c.pods.get_mut(&key) {
                    if !p.started_logs {
                        p.logs.extend(lines);
                        p.started_logs = true;
                    }
                }
                json!({
                    "phase": "Running",
                    "conditions": [scheduled, {"type": "Ready", "status": "True"}],
                    "containerStatuses": statuses(&|k| json!({
                        "name": k["name"], "image": k["image"], "ready": true, "restartCount": 0,
                        "started": true, "state": {"running": {}},
                    })),
                })
            }
        };
        set_status(c, "Pod", ns, &name, status);
    }
}

/// Deployment and StatefulSet statuses from their pods.
pub(crate) fn workload_status(c: &mut Cluster, ns: &str) {
    for kind in ["Deployment", "StatefulSet"] {
        let workloads: Vec<Value> = c.of(resource_of_kind(kind), ns).cloned().collect();
        for w in workloads {
            let name = name_of(&w);
            let pods = owned_pods(c, ns, kind, &name);
            let current = if kind == "Deployment" {
                ("pod-template-hash", short_hash(&w["spec"]["template"]))
            } else {
                (
                    "controller-revision-hash",
                    format!("{name}-{}", short_hash(&w["spec"]["template"])),
                )
            };
            let updated = pods
                .iter()
                .filter(|p| p["metadata"]["labels"][current.0] == json!(current.1))
                .count();
            let ready_count = pods.iter().filter(|p| ready(p)).count();
            let mut status = Map::new();
            status.insert(
                "observedGeneration".into(),
                w["metadata"]["generation"].clone(),
            );
            status.insert("replicas".into(), json!(pods.len()));
            status.insert("updatedReplicas".into(), json!(updated));
            status.insert("readyReplicas".into(), json!(ready_count));
            status.insert("availableReplicas".into(), json!(ready_count));
            if kind == "StatefulSet" {
                status.insert("currentReplicas".into(), json!(updated));
            } else if pods.len() > ready_count {
                status.insert(
                    "unavailableReplicas".into(),
                    json!(pods.len() - ready_count),
                );
            }
            set_status(c, kind, ns, &name, Value::Object(status));
        }
    }
}

/// The label the fake operator selects an `LGP`'s pods by.
pub(crate) const LGP_LABEL: &str = "lgp.apps.langchain.ai/name";

/// The official operator, as far as the agent can see it: each `LGP` gets a Deployment
/// and a Service of its name (owned by it), and a status reporting the Deployment's
/// rollout, once the Deployment controller has seen its current spec, and the
/// in-cluster endpoint.
pub(crate) fn lgp_operator(c: &mut Cluster, ns: &str) {
    let lgps: Vec<Value> = c.of(resource_of_kind("LGP"), ns).cloned().collect();
    for lgp in lgps {
        let name = name_of(&lgp);
        let server = &lgp["spec"]["serverSpec"];
        let mut labels = server["labels"].as_object().cloned().unwrap_or_default();
        labels.insert(LGP_LABEL.into(), json!(name));
        let replicas = server["replicas"]
            .as_i64()
            .or_else(|| lgp["spec"]["autoscaling"]["minReplicas"].as_i64())
            .unwrap_or(1);
        let spec = json!({
            "replicas": replicas,
            "selector": {"matchLabels": {LGP_LABEL: name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "api-server", "image": server["image"],
                                         "env": server["env"]}]},
            },
        });
        let metadata = |kind_labels: Value| {
            json!({
                "name": name, "namespace": ns, "labels": kind_labels,
                "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now(),
                "ownerReferences": [{"apiVersion": "apps.langchain.ai/v1alpha1", "kind": "LGP",
                                     "name": name, "controller": true}],
            })
        };
        let deployments = resource_of_kind("Deployment");
        let key = Cluster::key(deployments, ns, &name);
        match c.objects.get(&key).cloned() {
            Some(mut d) if d["spec"] != spec => {
                let generation = d["metadata"]["generation"].as_i64().unwrap_or(0);
                d["spec"] = spec;
                d["metadata"]["generation"] = json!(generation + 1);
                c.insert(deployments, ns, &name, d);
            }
            Some(_) => {}
            None => {
                let mut m = metadata(json!({LGP_LABEL: name}));
                m["generation"] = json!(1);
                let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": m, "spec": spec});
                c.insert(deployments, ns, &name, d);
            }
        }
        let services = resource_of_kind("Service");
        if !c.objects.contains_key(&Cluster::key(services, ns, &name)) {
            let svc = json!({
                "apiVersion": "v1", "kind": "Service", "metadata": metadata(json!({LGP_LABEL: name})),
                "spec": {"selector": {LGP_LABEL: name},
                         "ports": [{"name": "http", "port": 8000, "targetPort": 8000}]},
            });
            c.insert(services, ns, &name, svc);
        }
        let Some(d) = c.objects.get(&key) else {
            continue;
        };
        let seen = d["status"]["observedGeneration"] == d["metadata"]["generation"];
        let mut status = lgp["status"].as_object().cloned().unwrap_or_default();
        if seen {
            let ds = &d["status"];
            status.insert(
                "observedGeneration".into(),
                lgp["metadata"]["generation"].clone(),
            );
            status.insert(
                "deploymentStatus".into(),
                json!({
                    "replicas": ds["replicas"], "updatedReplicas": ds["updatedReplicas"],
                    "readyReplicas": ds["readyReplicas"], "availableReplicas": ds["availableReplicas"],
                }),
            );
        }
        status.insert(
            "endpoint".into(),
            json!(format!("http://{name}.{ns}.svc.cluster.local:8000")),
        );
        set_status(c, "LGP", ns, &name, Value::Object(status));
    }
}
