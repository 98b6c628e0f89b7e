#!/usr/bin/env python3
"""Writes crates/api/openapi.json: hostplane's API document.

The structure of each compatible operation (paths, methods, operationIds, parameters,
schemas, status codes) is taken from the reference document; every summary and
description is replaced with hostplane's own wording below, so no prose is copied.
Run it again when an operation is added:  tools/make-openapi.py REFERENCE.json"""
import copy, json, sys

ref = json.load(open(sys.argv[1] if len(sys.argv) > 1 else "crates/api/tests/fixtures/reference-openapi.json"))

OPS = {
    ("/v2/listeners", "get"): ("List listeners", "Listeners of the workspace, oldest first, one page at a time."),
    ("/v2/listeners", "post"): ("Create a listener", "Registers a data-plane listener for a Kubernetes cluster. The compute_id must be unused in the workspace. Needs an organization on the enterprise plan."),
    ("/v2/listeners/{listener_id}", "get"): ("Get a listener", "One listener of the workspace."),
    ("/v2/listeners/{listener_id}", "patch"): ("Update a listener", "Changes the version or replaces the compute configuration. Omitted or null fields keep their values."),
    ("/v2/listeners/{listener_id}", "delete"): ("Delete a listener", "Removes a listener that no deployment uses."),
}
SCHEMA_TEXT = {
    "Listener": "A data-plane listener registered with the control plane.",
    "ListenerComputeConfig": "Settings that depend on the compute type.",
    "ListenerCreateRequest": "Body of a listener creation.",
    "ListenerPatchRequest": "Body of a listener update.",
    "ListenersList": "One page of listeners.",
    "HTTPValidationError": "The request did not validate; every problem is listed.",
    "ValidationError": "One validation problem.",
}
FIELD_TEXT = {
    "version": "Version of the listener software.",
    "compute_type": "Kind of compute the listener manages; fixed at creation.",
    "compute_id": "Name chosen for the cluster, unique in the workspace; fixed at creation.",
    "compute_config": "Compute-specific settings.",
    "k8s_namespaces": "Kubernetes namespaces the listener deploys into.",
    "id": "Identifier assigned by the control plane.",
    "created_at": "When the resource was created (UTC).",
    "updated_at": "When the resource last changed (UTC).",
    "resources": "The resources of this page.",
    "offset": "Offset of the next page: pass it back to continue.",
    "limit": "Largest number of resources to return.",
}
STATUS_TEXT = {"200": "Success", "201": "Created", "204": "Deleted", "403": "Forbidden", "404": "Not found", "409": "Conflict", "422": "Validation error"}

def reword(node, field=None):
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "description":
                text = FIELD_TEXT.get(field)
                if text:
                    out[k] = text
                continue
            if k == "example":
                out[k] = v  # error texts clients match on: facts, not prose
                continue
            if k == "properties":
                out[k] = {name: reword(p, name) for name, p in v.items()}
                continue
            out[k] = reword(v, field)
        return out
    if isinstance(node, list):
        return [reword(x, field) for x in node]
    return node

paths = {}
for (path, method), (summary, description) in OPS.items():
    op = reword(copy.deepcopy(ref["paths"][path][method]))
    op["summary"], op["description"] = summary, description
    for p in op.get("parameters", []):
        p.pop("description", None)
        if p["name"] in FIELD_TEXT:
            p["description"] = FIELD_TEXT[p["name"]]
            p["schema"]["description"] = FIELD_TEXT[p["name"]]
    for code, r in op["responses"].items():
        r["description"] = STATUS_TEXT[code]
    paths.setdefault(path, {})[method] = op

schemas = {}
for name, text in SCHEMA_TEXT.items():
    s = reword(copy.deepcopy(ref["components"]["schemas"][name]))
    s["description"] = text
    schemas[name] = s

paths["/ok"] = {"get": {
    "tags": ["hostplane"], "summary": "Health check", "operationId": "hostplane_ok",
    "description": "Answers as long as the server runs; needs no credentials.",
    "responses": {"200": {"description": "Healthy", "content": {"application/json": {"schema": {
        "type": "object", "properties": {"ok": {"type": "boolean", "const": True}}, "required": ["ok"]}}}}},
}}

doc = {
    "openapi": "3.1.0",
    "info": {
        "title": "hostplane control plane API",
        "version": "0.1.0",
        "description": "hostplane is a self-hostable control plane for agent deployments. Its compatible operations "
                       "match the LangSmith Deployment Control Plane API, so existing clients work unchanged. "
                       "Send an API key in `X-Api-Key` (or as a bearer token) and, for organization-wide keys, the "
                       "workspace in `X-Tenant-Id`. Every path is also served under `/api-host`.",
    },
    "paths": paths,
    "components": {
        "schemas": schemas,
        "securitySchemes": {
            "API Key": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
            "Tenant ID": {"type": "apiKey", "in": "header", "name": "X-Tenant-Id"},
            "Bearer Auth": {"type": "http", "scheme": "bearer"},
        },
    },
}
json.dump(doc, open("crates/api/openapi.json", "w"), indent=1, ensure_ascii=False)
open("crates/api/openapi.json", "a").write("\n")
