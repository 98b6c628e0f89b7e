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
    ("/v2/deployments", "get"): ("List deployments", "Deployments of the workspace, oldest first, with optional filters."),
    ("/v2/deployments", "post"): ("Create a deployment", "Creates a deployment together with its first revision."),
    ("/v2/deployments", "delete"): ("Delete several deployments", "Deletes up to 100 deployments and reports each one."),
    ("/v2/deployments/{deployment_id}", "get"): ("Get a deployment", "One deployment of the workspace."),
    ("/v2/deployments/{deployment_id}", "patch"): ("Update a deployment", "Changes a deployment; changes to what runs create a new revision."),
    ("/v2/deployments/{deployment_id}", "delete"): ("Delete a deployment", "Deletes a deployment; one a data plane runs is torn down first."),
    ("/v2/deployments/{deployment_id}/revisions", "get"): ("List revisions", "Revisions of a deployment, newest first."),
    ("/v2/deployments/{deployment_id}/revisions/{revision_id}", "get"): ("Get a revision", "One revision of a deployment."),
    ("/v2/deployments/{deployment_id}/revisions/{revision_id}/redeploy", "post"): ("Redeploy a revision", "Creates a new revision from an earlier one's source and configuration."),
}
SCHEMA_TEXT = {
    "Listener": "A data-plane listener registered with the control plane.",
    "ListenerComputeConfig": "Settings that depend on the compute type.",
    "ListenerCreateRequest": "Body of a listener creation.",
    "ListenerPatchRequest": "Body of a listener update.",
    "ListenersList": "One page of listeners.",
    "Deployment": "An agent deployment.",
    "DeploymentCreateRequest": "Body of a deployment creation.",
    "DeploymentPatchRequest": "Body of a deployment update.",
    "DeploymentsList": "One page of deployments.",
    "Revision": "One version of what a deployment runs.",
    "RevisionsList": "One page of revisions.",
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
STATUS_TEXT = {"200": "Success", "207": "Partly done", "400": "Bad request", "201": "Created", "204": "Deleted", "403": "Forbidden", "404": "Not found", "409": "Conflict", "422": "Validation error"}

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

def refs(node, out):
    if isinstance(node, dict):
        r = node.get("$ref")
        if isinstance(r, str):
            name = r.split("/")[-1]
            if name not in out:
                out.add(name)
                refs(ref["components"]["schemas"][name], out)
        for v in node.values():
            refs(v, out)
    elif isinstance(node, list):
        for v in node:
            refs(v, out)

names = set()
refs(paths, names)
schemas = {}
for name in sorted(names):
    s = reword(copy.deepcopy(ref["components"]["schemas"][name]))
    if name in SCHEMA_TEXT:
        s["description"] = SCHEMA_TEXT[name]
    schemas[name] = s

def own(summary, description, op_id, params, responses, security=True, body=None):
    op = {"tags": ["hostplane"], "summary": summary, "description": description, "operationId": op_id,
          "parameters": params, "responses": responses}
    if security:
        op["security"] = [{"API Key": []}, {"Tenant ID": []}, {"Bearer Auth": []}]
    else:
        op["security"] = []
    if body:
        op["requestBody"] = body
    return op

dep_param = {"name": "deployment_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid", "title": "Deployment ID"}}
detail = {"application/json": {"schema": {"type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]}}}
paths["/v2/deployments/{deployment_id}/push-token"] = {"post": own(
    "Get registry credentials", "Credentials to push an image for an 'internal_docker' deployment to the registry the operator configured.",
    "hostplane_push_token", [dep_param],
    {"200": {"description": "Credentials", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PushToken"}}}},
     "400": {"description": "Not available", "content": detail}, "404": {"description": "Not found", "content": detail}})}
paths["/v2/deployments/{deployment_id}/upload-url"] = {"post": own(
    "Get an upload URL", "A single-use, expiring URL on this server that accepts one gzip source tarball for an 'internal_source' deployment.",
    "hostplane_upload_url", [dep_param],
    {"200": {"description": "Upload URL", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/UploadUrl"}}}},
     "400": {"description": "Not available", "content": detail}, "404": {"description": "Not found", "content": detail}})}
paths["/uploads/{token}"] = {"put": own(
    "Upload a source tarball", "Receives the tarball for an upload URL; the token in the path is the credential.",
    "hostplane_put_upload", [{"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}],
    {"200": {"description": "Stored"}, "400": {"description": "Not a gzip tarball", "content": detail},
     "403": {"description": "Unknown, expired or used token", "content": detail}, "413": {"description": "Too large", "content": detail}},
    security=False,
    body={"required": True, "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}}})}
schemas["PushToken"] = {"type": "object", "title": "PushToken", "description": "Registry credentials.", "properties": {
    "token": {"type": "string"}, "registry_url": {"type": "string"}, "username": {"type": "string"}}, "required": ["token", "registry_url"]}
schemas["UploadUrl"] = {"type": "object", "title": "UploadUrl", "description": "Where to upload a source tarball.", "properties": {
    "upload_url": {"type": "string"}, "object_path": {"type": "string"},
    "upload_headers": {"type": "object", "additionalProperties": {"type": "string"}}}, "required": ["upload_url", "object_path", "upload_headers"]}

paths["/ok"] = {"get": {
    "tags": ["hostplane"], "summary": "Health check", "operationId": "hostplane_ok",
    "description": "Answers as long as the server runs; needs no credentials.",
    "security": [],
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
