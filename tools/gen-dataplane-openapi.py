#!/usr/bin/env python3
"""Writes crates/api/src/dataplane/openapi.json, the data plane's own OpenAPI document.

The schemas mirror the types of crates/protocol/src/lib.rs field for field; the
contract test (crates/api/tests/dataplane_contract.rs) checks the document against the
router and against real requests and answers, so an edit here that drifts from the code
fails the tests. Run it after changing the protocol, then commit the output.
"""
import json
import pathlib

S = "#/components/schemas/"


def ref(name):
    return {"$ref": S + name}


def nullable(schema):
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    out = dict(schema)
    out["type"] = [schema["type"], "null"]
    return out


def obj(props, required=None, description=None, closed=True):
    o = {"type": "object", "properties": props,
         "required": list(props) if required is None else required}
    if closed:
        o["additionalProperties"] = False
    if description:
        o["description"] = description
    return o


uuid = {"type": "string", "format": "uuid"}
text = {"type": "string"}
version = {"type": "integer", "const": 1, "description": "The protocol version: 1."}
when = {"type": "string", "format": "date-time"}
count = {"type": "integer", "minimum": 0}

schemas = {
    "Heartbeat": obj({
        "protocol_version": version,
        "agent_id": {**text, "description": "Names one agent replica; claims belong to it."},
        "agent_version": {**text, "description": "Becomes the listener's public version."},
        "mode": {**text, "description": "native, lgp, render, containers, or the agent's own."},
        "cluster": {"type": "object", "description": "Free-form facts about the cluster."},
        "deployments": {"type": "array", "items": ref("Observed")},
    }, required=["protocol_version", "agent_id", "agent_version", "mode"]),
    "Observed": obj({
        "deployment_id": uuid,
        "revision_id": nullable(uuid),
        "phase": {**text, "description": "pending, progressing, available, degraded, failed..."},
        "ready_replicas": count,
        "total_replicas": count,
        "endpoint": nullable(text),
        "last_error": nullable(text),
    }, required=["deployment_id", "revision_id", "phase"]),
    "HeartbeatAnswer": obj({
        "protocol_version": version,
        "generation": {"type": "integer"},
        "heartbeat_interval_seconds": count,
        "lease_seconds": count,
    }),
    "DesiredState": obj({
        "protocol_version": version,
        "listener_id": uuid,
        "generation": {"type": "integer",
                       "description": "Grows with every change to what the listener runs."},
        "namespaces": {"type": "array", "items": text},
        "deployments": {"type": "array", "items": ref("DesiredDeployment")},
    }),
    "DesiredDeployment": obj({
        "id": uuid,
        "name": text,
        "namespace": nullable(text),
        "deployment_type": nullable(text),
        "status": {**text, "description": "The public deployment status."},
        "deleting": {"type": "boolean",
                     "description": "Tear the deployment down, then call deleted."},
        "active_revision_id": nullable(uuid),
        "revision": nullable(ref("DesiredRevision")),
        "resource_spec": nullable({"type": "object"}),
        "secret_references": {"description": "The deployment's secret_references, as sent."},
        "env": {"type": "array", "items": ref("EnvVar")},
    }),
    "DesiredRevision": obj({
        "id": uuid,
        "status": {**text, "description": "The public revision status."},
        "image": nullable(text),
        "build": nullable(ref("BuildSpec")),
        "lease_holder": nullable(text),
        "created_at": when,
    }),
    "BuildSpec": obj({
        "langgraph_config_path": nullable(text),
        "install_command": nullable(text),
        "build_command": nullable(text),
    }),
    "EnvVar": obj({"name": text, "value": text}),
    "Claim": obj({"protocol_version": version, "agent_id": text}),
    "ClaimAnswer": obj({
        "protocol_version": version,
        "revision_id": uuid,
        "status": {"type": "string", "enum": ["DEPLOYING", "BUILDING"]},
        "lease_expires_at": when,
    }),
    "StatusReport": obj({
        "protocol_version": version,
        "agent_id": text,
        "status": {"type": "string",
                   "enum": ["BUILT", "BUILD_FAILED", "DEPLOYED", "DEPLOY_FAILED"]},
        "reason": nullable(text),
        "message": nullable(text),
        "image": nullable({**text, "description": "Required with BUILT."}),
    }, required=["protocol_version", "agent_id", "status"]),
    "StatusAnswer": obj({
        "protocol_version": version,
        "revision_id": uuid,
        "status": {**text, "description": "The revision's status after the report."},
    }),
    "Deleted": obj({"protocol_version": version, "agent_id": text}),
    "DeletedAnswer": obj({
        "protocol_version": version,
        "deployment_id": uuid,
        "deleted": {"type": "boolean"},
    }),
    "LogBatch": obj({
        "protocol_version": version,
        "lines": {"type": "array", "maxItems": 1000, "items": ref("LogLine")},
    }),
    "LogLine": obj({
        "deployment_id": uuid,
        "revision_id": uuid,
        "kind": {"type": "string", "enum": ["deploy", "build"]},
        "timestamp": when,
        "level": text,
        "message": {**text, "description": "Cut to 16 KiB."},
    }),
    "LogsAnswer": obj({"protocol_version": version, "accepted": count}),
    "Error": obj({"detail": text}),
}

errors = {
    "400": "A protocol version this server does not speak (the text names both).",
    "401": "No key, or a key that is not valid.",
    "403": "Not a listener key, or the key of another listener.",
    "404": "No such listener, revision or deployment on this listener.",
    "409": "The state machine refuses it (the text names the states).",
    "422": "A body or query that does not match the schema.",
}


def answers(ok_schema, codes, ok_type="application/json"):
    out = {"200": {"description": "Done.",
                   "content": {ok_type: {"schema": ok_schema}}}}
    for c in codes:
        out[c] = {"description": errors[c],
                  "content": {"application/json": {"schema": ref("Error")}}}
    return out


def body(name):
    return {"required": True, "content": {"application/json": {"schema": ref(name)}}}


listener = {"name": "listener_id", "in": "path", "required": True, "schema": uuid}
revision = {"name": "revision_id", "in": "path", "required": True, "schema": uuid}
deployment = {"name": "deployment_id", "in": "path", "required": True, "schema": uuid}
pv = {"name": "protocol_version", "in": "query", "required": True,
      "schema": {"type": "integer", "const": 1}}
common = ["400", "401", "403", "422"]
P = "/dataplane/v1/listeners/{listener_id}"

paths = {
    P + "/heartbeat": {"post": {
        "operationId": "heartbeat",
        "summary": "Liveness, agent version and what the agent observes; renews its leases.",
        "parameters": [listener], "requestBody": body("Heartbeat"),
        "responses": answers(ref("HeartbeatAnswer"), common + ["404"])}},
    P + "/desired": {"get": {
        "operationId": "desired",
        "summary": "The listener's whole desired state; waits up to `wait` seconds for a "
                   "generation newer than `after`.",
        "parameters": [listener, pv,
                       {"name": "after", "in": "query", "required": False,
                        "schema": {"type": "integer", "default": -1}},
                       {"name": "wait", "in": "query", "required": False,
                        "schema": {"type": "integer", "minimum": 0, "maximum": 60,
                                   "default": 0}}],
        "responses": answers(ref("DesiredState"), common + ["404"])}},
    P + "/revisions/{revision_id}/claim": {"post": {
        "operationId": "claim",
        "summary": "Take a waiting revision (AWAITING_DEPLOY to DEPLOYING, AWAITING_BUILD to "
                   "BUILDING) under a lease.",
        "parameters": [listener, revision], "requestBody": body("Claim"),
        "responses": answers(ref("ClaimAnswer"), common + ["404", "409"])}},
    P + "/revisions/{revision_id}/source": {"get": {
        "operationId": "source",
        "summary": "The uploaded source tarball of a revision whose build this agent holds.",
        "parameters": [listener, revision, pv,
                       {"name": "agent_id", "in": "query", "required": True, "schema": text}],
        "responses": answers({"type": "string", "contentMediaType": "application/gzip"},
                             common + ["404", "409"], ok_type="application/gzip")}},
    P + "/revisions/{revision_id}/status": {"post": {
        "operationId": "report",
        "summary": "Report BUILT, BUILD_FAILED, DEPLOYED or DEPLOY_FAILED for a held revision.",
        "parameters": [listener, revision], "requestBody": body("StatusReport"),
        "responses": answers(ref("StatusAnswer"), common + ["404", "409"])}},
    P + "/deployments/{deployment_id}/deleted": {"post": {
        "operationId": "deleted",
        "summary": "Teardown of a deployment in AWAITING_DELETE is done; it disappears.",
        "parameters": [listener, deployment], "requestBody": body("Deleted"),
        "responses": answers(ref("DeletedAnswer"), common + ["404", "409"])}},
    P + "/logs": {"post": {
        "operationId": "logs",
        "summary": "Deploy and build log lines of deployments this listener runs.",
        "parameters": [listener], "requestBody": body("LogBatch"),
        "responses": answers(ref("LogsAnswer"), common + ["404"])}},
}

doc = {
    "openapi": "3.1.0",
    "info": {
        "title": "hostplane data-plane protocol",
        "version": "1",
        "description": "What a listener agent calls on the control plane. Every call comes "
                       "from the agent, with a listener key (X-Api-Key or Authorization: "
                       "Bearer). See docs/dataplane.md.",
    },
    "paths": paths,
    "components": {
        "schemas": schemas,
        "securitySchemes": {"ListenerKey": {"type": "apiKey", "in": "header",
                                            "name": "X-Api-Key"}},
    },
    "security": [{"ListenerKey": []}],
}

out = pathlib.Path(__file__).resolve().parent.parent / "crates/api/src/dataplane/openapi.json"
out.write_text(json.dumps(doc, indent=2) + "\n")
print(f"wrote {out}")
