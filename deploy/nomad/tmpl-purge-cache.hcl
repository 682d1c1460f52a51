# tmpl purge-cache on every orchestrator node, once per dispatch.
#
# A parameterized sysbatch job: Nomad runs the task once on every eligible client (the
# orchestrator nodes, chosen by node pool and, optionally, node class), with the build IDs given
# at dispatch. Each allocation prints one JSON report on stdout; collect them with
# `nomad alloc logs` and merge them with `tmpl purge-cache --summarize -` (see README.md here).
#
#   nomad job run -var 'node_pool=default' deploy/nomad/tmpl-purge-cache.hcl
#   nomad job dispatch -meta build_ids=<id>[,<id>...] [-meta dry_run=true] [-meta force=true] tmpl-purge-cache
#
# The cache variables below must match the orchestrator job's environment (empty = the
# orchestrator's own default, which tmpl applies the same way).

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "node_pool" {
  description = "Node pool of the orchestrator clients (E2B's orchestrator job runs in the client pool)."
  type        = string
  default     = "default"
}

variable "node_class" {
  description = "If not empty, also require this node class."
  type        = string
  default     = ""
}

variable "tmpl_path" {
  description = "Path of the tmpl binary on the nodes (the Debian package installs /usr/bin/tmpl). Not used when tmpl_url is set."
  type        = string
  default     = "/usr/bin/tmpl"
}

variable "tmpl_url" {
  description = "If not empty, fetch tmpl into the task with an artifact stanza instead of using tmpl_path: the URL of a tar.gz holding the binary `tmpl` (scripts/build-deb.sh writes tmpl-VERSION-ARCH.tar.gz beside the .deb), with ?checksum=sha256:<hex> appended so go-getter verifies it before unpacking."
  type        = string
  default     = ""
}

variable "orchestrator_base_path" {
  type    = string
  default = ""
}

variable "template_cache_dir" {
  type    = string
  default = ""
}

variable "default_cache_dir" {
  type    = string
  default = ""
}

variable "shared_chunk_cache_path" {
  type    = string
  default = ""
}

variable "sandbox_cache_dir" {
  type    = string
  default = ""
}

variable "snapshot_cache_dir" {
  type    = string
  default = ""
}

variable "orchestrator_lock_path" {
  type    = string
  default = ""
}

job "tmpl-purge-cache" {
  type        = "sysbatch"
  datacenters = var.datacenters
  node_pool   = var.node_pool
  priority    = 60

  parameterized {
    meta_required = ["build_ids"]
    meta_optional = ["dry_run", "force"]
    payload       = "forbidden"
  }

  # Defaults for the optional dispatch parameters.
  meta {
    dry_run = "false"
    force   = "false"
  }

  dynamic "constraint" {
    for_each = var.node_class == "" ? [] : [var.node_class]
    content {
      attribute = "${node.class}"
      value     = constraint.value
    }
  }

  group "purge" {
    # A purge is not retried: a failed or refused node shows in the summary instead.
    restart {
      attempts = 0
      mode     = "fail"
    }

    task "purge-cache" {
      # raw_exec: the caches, /proc (open files, the orchestrator lock) are the host's.
      driver = "raw_exec"

      # With tmpl_url, the archive is fetched and unpacked into the task's local/ (modes kept, so the
      # binary stays executable); without it, tmpl must be installed on the node (tmpl_path).
      dynamic "artifact" {
        for_each = var.tmpl_url == "" ? [] : [var.tmpl_url]
        content {
          source      = artifact.value
          destination = "local/"
        }
      }

      config {
        command = var.tmpl_url == "" ? var.tmpl_path : "local/tmpl"
        args = [
          "purge-cache",
          "--json",
          "--build-id", "${NOMAD_META_build_ids}",
          "--node-name", "${node.unique.name}",
        ]
      }

      env {
        # The dispatch's dry_run/force (true or false) reach --dry-run/--force through these.
        TMPL_PURGE_DRY_RUN      = "${NOMAD_META_dry_run}"
        TMPL_PURGE_FORCE        = "${NOMAD_META_force}"
        ORCHESTRATOR_BASE_PATH  = var.orchestrator_base_path
        TEMPLATE_CACHE_DIR      = var.template_cache_dir
        DEFAULT_CACHE_DIR       = var.default_cache_dir
        SHARED_CHUNK_CACHE_PATH = var.shared_chunk_cache_path
        SANDBOX_CACHE_DIR       = var.sandbox_cache_dir
        SNAPSHOT_CACHE_DIR      = var.snapshot_cache_dir
        ORCHESTRATOR_LOCK_PATH  = var.orchestrator_lock_path
      }

      resources {
        cpu    = 500
        memory = 256
      }
    }
  }
}
