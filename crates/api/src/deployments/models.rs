//! Request models of the deployment operations, as pydantic declares them in the
//! reference (field order matters: errors are reported in it).

use compat::schema::{Field, Model, Ty};

pub const SOURCES: &[&str] = &[
    "github",
    "external_docker",
    "internal_docker",
    "internal_source",
];
pub const REVISION_SOURCES: &[&str] = &["github", "internal_docker", "internal_source"];
/// `dev_zero` is what current clients send besides the documented three.
pub const DEPLOYMENT_TYPES: &[&str] = &["dev_free", "dev", "prod", "dev_zero"];

const STR: Ty = Ty::Str;
const INT: Ty = Ty::Int;
const FLOAT: Ty = Ty::Float { ge: None, le: None };
const CPU: Ty = Ty::Float {
    ge: Some(0.1),
    le: Some(8.0),
};
const CPU_LIMIT: Ty = Ty::Float {
    ge: Some(0.1),
    le: Some(16.0),
};
const BOOL: Ty = Ty::Bool;
const UUID: Ty = Ty::Uuid;
const STR_LIST: Ty = Ty::List(&STR);
const STR_DICT: Ty = Ty::Dict(&STR);
const ANY_DICT: Ty = Ty::AnyDict;

pub static SECRET: Model = Model {
    fields: &[Field::required("name", STR), Field::required("value", STR)],
};

pub static SECRET_REFERENCE: Model = Model {
    fields: &[
        Field::required("name", STR),
        Field::required("secret_name", STR),
        Field::required("secret_key", STR),
    ],
};

static LISTENER_CONFIG: Model = Model {
    fields: &[Field::optional("k8s_namespace", &STR)],
};

static LOCAL_OBJECT_REFERENCE: Model = Model {
    fields: &[Field::required("name", STR)],
};

static ENV_VAR: Model = Model {
    fields: &[
        Field::required("name", STR),
        Field::optional("value", &STR),
        Field::optional("valueFrom", &ANY_DICT),
    ],
};

static RESOURCE_REQUIREMENTS: Model = Model {
    fields: &[
        Field::optional("limits", &STR_DICT),
        Field::optional("requests", &STR_DICT),
    ],
};

/// Fields without `required` in the reference whose type is not nullable: absent is
/// `null`, but a sent `null` is refused.
const fn defaulted(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        required: false,
    }
}

static VOLUME_MOUNT: Model = Model {
    fields: &[
        defaulted("name", STR),
        defaulted("mountPath", STR),
        Field::optional("subPath", &STR),
        Field::optional("mountPropagation", &STR),
        Field::optional("readOnly", &BOOL),
        Field::optional("subPathExpr", &STR),
    ],
};

static VOLUME: Model = Model {
    fields: &[
        defaulted("name", STR),
        Field::optional("configMap", &ANY_DICT),
        Field::optional("secret", &ANY_DICT),
        Field::optional("emptyDir", &ANY_DICT),
        Field::optional("persistentVolumeClaim", &ANY_DICT),
        Field::optional("nfs", &ANY_DICT),
        Field::optional("projected", &ANY_DICT),
        Field::optional("downwardAPI", &ANY_DICT),
        Field::optional("csi", &ANY_DICT),
    ],
};

const ENV_LIST: Ty = Ty::List(&Ty::Model(&ENV_VAR));
const ANY_DICT_LIST: Ty = Ty::List(&ANY_DICT);
const REQUIREMENTS: Ty = Ty::Model(&RESOURCE_REQUIREMENTS);
const MOUNTS: Ty = Ty::List(&Ty::Model(&VOLUME_MOUNT));

static CONTAINER: Model = Model {
    fields: &[
        Field::required("name", STR),
        Field::required("image", STR),
        Field::optional("imagePullPolicy", &STR),
        Field::optional("command", &STR_LIST),
        Field::optional("args", &STR_LIST),
        Field::optional("workingDir", &STR),
        Field::optional("env", &ENV_LIST),
        Field::optional("envFrom", &ANY_DICT_LIST),
        Field::optional("resources", &REQUIREMENTS),
        Field::optional("volumeMounts", &MOUNTS),
        Field::optional("securityContext", &ANY_DICT),
        Field::optional("restartPolicy", &STR),
    ],
};

const PULL_SECRETS: Ty = Ty::List(&Ty::Model(&LOCAL_OBJECT_REFERENCE));
const VOLUMES: Ty = Ty::List(&Ty::Model(&VOLUME));
const CONTAINERS: Ty = Ty::List(&Ty::Model(&CONTAINER));

pub static RESOURCE_SPEC: Model = Model {
    fields: &[
        Field::optional("min_scale", &INT),
        Field::optional("max_scale", &INT),
        Field::optional("cpu", &CPU),
        Field::optional("cpu_limit", &CPU_LIMIT),
        Field::optional("memory_mb", &INT),
        Field::optional("memory_limit_mb", &INT),
        Field::optional("queue_min_scale", &INT),
        Field::optional("queue_max_scale", &INT),
        Field::optional("queue_cpu", &CPU),
        Field::optional("queue_cpu_limit", &CPU_LIMIT),
        Field::optional("queue_memory_mb", &INT),
        Field::optional("queue_memory_limit_mb", &INT),
        Field::optional("orchestrator_cpu", &FLOAT),
        Field::optional("orchestrator_cpu_limit", &FLOAT),
        Field::optional("orchestrator_memory_mb", &INT),
        Field::optional("orchestrator_memory_limit_mb", &INT),
        Field::optional("orchestrator_min_scale", &INT),
        Field::optional("orchestrator_max_scale", &INT),
        Field::optional("executor_cpu", &FLOAT),
        Field::optional("executor_cpu_limit", &FLOAT),
        Field::optional("executor_memory_mb", &INT),
        Field::optional("executor_memory_limit_mb", &INT),
        Field::optional("redis_cpu", &CPU),
        Field::optional("redis_cpu_limit", &CPU_LIMIT),
        Field::optional("redis_memory_mb", &INT),
        Field::optional("redis_memory_limit_mb", &INT),
        Field::optional("labels", &STR_DICT),
        Field::optional("annotations", &STR_DICT),
        Field::optional("service_account_name", &STR),
        Field::optional("image_pull_secrets", &PULL_SECRETS),
        Field::optional("volumes", &VOLUMES),
        Field::optional("volume_mounts", &MOUNTS),
        Field::optional("init_containers", &CONTAINERS),
        Field::optional("sidecars", &CONTAINERS),
        Field::optional("db_cpu", &FLOAT),
        Field::optional("db_cpu_limit", &FLOAT),
        Field::optional("db_memory_mb", &INT),
        Field::optional("db_memory_limit_mb", &INT),
        Field::optional("db_storage_gi", &INT),
        Field::optional("db_max_connections", &INT),
    ],
};

const DEPLOYMENT_TYPE: Ty = Ty::Literal(DEPLOYMENT_TYPES);
const RESOURCE_SPEC_TY: Ty = Ty::Model(&RESOURCE_SPEC);
const LISTENER_CONFIG_TY: Ty = Ty::Model(&LISTENER_CONFIG);

pub static SOURCE_CONFIG: Model = Model {
    fields: &[
        Field::optional("integration_id", &UUID),
        Field::optional("repo_url", &STR),
        Field::optional("deployment_type", &DEPLOYMENT_TYPE),
        Field::optional("build_on_push", &BOOL),
        Field::optional("custom_url", &STR),
        Field::optional("resource_spec", &RESOURCE_SPEC_TY),
        Field::optional("listener_id", &UUID),
        Field::optional("listener_config", &LISTENER_CONFIG_TY),
        Field::optional("install_command", &STR),
        Field::optional("build_command", &STR),
    ],
};

pub static SOURCE_REVISION_CONFIG: Model = Model {
    fields: &[
        Field::optional("repo_ref", &STR),
        Field::optional("langgraph_config_path", &STR),
        Field::optional("image_uri", &STR),
        Field::optional("source_tarball_path", &STR),
    ],
};

const SECRETS: Ty = Ty::List(&Ty::Model(&SECRET));
const SECRET_REFERENCES: Ty = Ty::List(&Ty::Model(&SECRET_REFERENCE));

pub static CREATE: Model = Model {
    fields: &[
        Field::required("name", STR),
        Field::required("source", Ty::Literal(SOURCES)),
        Field::required("source_config", Ty::Model(&SOURCE_CONFIG)),
        Field::required("source_revision_config", Ty::Model(&SOURCE_REVISION_CONFIG)),
        Field::required("secrets", SECRETS),
        Field::optional("secret_references", &SECRET_REFERENCES),
    ],
};

const REVISION_SOURCE: Ty = Ty::Literal(REVISION_SOURCES);
const SOURCE_CONFIG_TY: Ty = Ty::Model(&SOURCE_CONFIG);
const SOURCE_REVISION_CONFIG_TY: Ty = Ty::Model(&SOURCE_REVISION_CONFIG);

pub static PATCH: Model = Model {
    fields: &[
        Field::optional("revision_source", &REVISION_SOURCE),
        Field::optional("source_config", &SOURCE_CONFIG_TY),
        Field::optional("source_revision_config", &SOURCE_REVISION_CONFIG_TY),
        Field::optional("secrets", &SECRETS),
        Field::optional("secret_references", &SECRET_REFERENCES),
    ],
};

/// The typed form of a validated body (a mismatch is a bug in the models: 500).
pub fn typed<T: serde::de::DeserializeOwned>(body: compat::Value) -> crate::error::ApiResult<T> {
    serde_json::from_value(body.to_json()).map_err(|e| {
        crate::error::ApiError::Internal(format!(
            "a validated body does not fit {}: {e}",
            std::any::type_name::<T>()
        ))
    })
}
