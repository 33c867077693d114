"""Backends that run attempts for the scheduler (the contract: maml.runtime.backend).

    maml.runtime.executors.local.LocalBackend   worker processes on this machine
    maml.runtime.executors.ray.RayBackend       Ray actors (optional extra)

Nothing is imported here, so `import maml.runtime.executors` stays light.
"""
