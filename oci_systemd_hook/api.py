"""The library API: what the command line does, for container managers that call Python.

A manager that starts containers itself (ImageAPI's ``systemd: true``, a test
harness, a custom runtime) calls `prepare` once the container's init process
exists in its mount namespace and before it pivots into the rootfs, and
`cleanup` after the container is gone::

    from oci_systemd_hook import api

    plan = api.prepare(bundle="/run/mybundle", pid=child_pid, container_id="web1")
    ...
    api.cleanup(container_id="web1")

Errors are `oci_systemd_hook.errors.HookError` (or its `InputError`), whose
message is one line meant for the user. Nothing here imports more than the step
at hand needs: the hook's start path goes through these functions too.
"""

from __future__ import annotations

import os

from oci_systemd_hook.errors import InputError
from oci_systemd_hook.log import Log
from oci_systemd_hook.ocistate import State
from oci_systemd_hook.settings import Settings

TYPE_CHECKING = False  # mypy reads this as true; `typing` itself costs more than the interpreter start
if TYPE_CHECKING:
    from oci_systemd_hook.plan import Plan


def _defaults(settings: Settings | None, log: Log | None) -> tuple[Settings, Log]:
    if settings is None:
        settings = Settings()
        settings.apply_env(dict(os.environ))
    return settings, log if log is not None else Log(debug=settings.debug)


def plan_for(state: State, settings: Settings | None = None, log: Log | None = None,
             need_pid: bool = False) -> Plan | None:
    """Decide what prestart would do for `state` (None: the hook does not act on it)."""
    from oci_systemd_hook.activation import decide
    from oci_systemd_hook.spec import load_spec

    settings, log = _defaults(settings, log)
    spec = load_spec(state.bundle)
    act, why = decide(spec, state.annotations)
    if not act:
        log.debug(f"nothing to do: {why}")
        return None
    annotations = dict(spec.annotations)
    annotations.update(state.annotations)
    settings.apply_annotations(annotations)
    log.debug_enabled = log.debug_enabled or settings.debug
    log.debug(f"acting: {why}")
    if need_pid and state.pid is None:
        raise InputError('prestart needs the container\'s "pid" in the state')
    rootfs = os.path.realpath(spec.root)
    if not os.path.isdir(rootfs):
        raise InputError(f"the container root {spec.root} is not a directory")

    from oci_systemd_hook.hostfacts import gather
    from oci_systemd_hook.ids import machine_id_candidates
    from oci_systemd_hook.plan import build_plan

    candidates = machine_id_candidates(state.id, spec.env_get("container_uuid"))
    facts = gather(state.pid, settings.journal_root, settings.state_dir, candidates, spec.mount_label)
    if settings.cgroup_view == "auto":
        from oci_systemd_hook.cgroupview import guest_systemd_version, host_layout

        if host_layout(facts.host_mounts) != "unified":  # which view the guest needs
            from oci_systemd_hook.rootfs import Root

            with Root(rootfs) as root:
                facts.guest_systemd = guest_systemd_version(root)
    return build_plan(state, spec, settings, facts, rootfs)


def prepare(bundle: str, pid: int, container_id: str, annotations: dict[str, str] | None = None,
            settings: Settings | None = None, log: Log | None = None) -> Plan | None:
    """Prepare the container whose init is `pid` for systemd (the prestart stage).

    Returns the plan that was carried out, or None if the container is not a
    systemd container (see `activation.decide`).
    """
    from oci_systemd_hook.ids import check_container_id

    state = State(check_container_id(container_id), os.path.abspath(bundle), pid, "creating", annotations)
    return prestart(state, settings, log)


def prestart(state: State, settings: Settings | None = None, log: Log | None = None) -> Plan | None:
    """The prestart/createRuntime stage for an already parsed OCI state."""
    settings, log = _defaults(settings, log)
    plan = plan_for(state, settings, log, need_pid=True)
    if plan is None:
        return None
    assert state.pid is not None
    earlier = _earlier_run(plan, state, log)
    if earlier:
        return plan
    from oci_systemd_hook.apply import prestart as apply_prestart

    if log.debug_enabled:
        for line in plan.render().splitlines():
            log.debug("plan: " + line)
    # Nothing was unmounted since planning: the mount tables read then are still the ones before.
    apply_prestart(plan, state.pid, log, state.bundle, plan.mounts_seen if earlier is None else None)
    log.info(f"prepared for systemd: machine-id {plan.machine_id}, {len(plan.mounts)} mounts")
    return plan


def _earlier_run(plan: Plan, state: State, log: Log) -> bool | None:
    """Deal with a record an earlier prestart left for this id: None when there is none, True
    when nothing is left to do, False when it was undone (mounts may have gone since planning).

    * another bundle's live container: the same id in another runtime (another
      `--root`). Refused: its state is not ours to rewrite.
    * this very process, prepared completely: the hook is wired in twice
      (prestart and createRuntime, or config.json and hooks.d).
    * this very process, prepared in part: an earlier run was killed half-way; its
      mounts are taken down before starting again, so that nothing is stacked twice.
    * anything else is stale (a container that is gone without a poststop): undone.
    """
    from oci_systemd_hook.hoststate import read_record

    record = read_record(plan.state_dir)
    if record is None:
        return None
    from oci_systemd_hook.cleanup import record_is_live, undo_record

    live = record_is_live(record)
    bundle = record.get("bundle")
    if live and isinstance(bundle, str) and bundle and bundle != state.bundle:
        raise InputError(f"container id {state.id[:64]} is in use by a live container of the bundle {bundle[:200]}"
                         " (the same id in two runtimes?): refusing to touch its state")
    if live and state.pid is not None and record.get("pid") == state.pid:
        if record.get("complete") is True:
            log.info("already prepared by an earlier run of the hook (wired in twice?): nothing to do")
            return True
        from oci_systemd_hook.apply import undo_partial

        undo_partial(record, state.pid, log)
    else:
        undo_record(record, log, plan.state_dir)
        old_mid = record.get("machine_id")
        if isinstance(old_mid, str) and old_mid and old_mid != plan.machine_id:
            from oci_systemd_hook.registry import release_mid

            release_mid(plan.state_root, old_mid, state.id)
    return False


def cleanup(container_id: str, bundle: str = "", annotations: dict[str, str] | None = None,
            settings: Settings | None = None, log: Log | None = None) -> None:
    """Undo on the host what `prepare` did (the poststop stage). Safe to call twice.

    `bundle` is only needed when prestart left no record and the journal is to
    be removed; it may be gone already.
    """
    from oci_systemd_hook.ids import check_container_id

    state = State(check_container_id(container_id), os.path.abspath(bundle) if bundle else "/", None,
                  "stopped", annotations)
    poststop(state, settings, log)


def poststop(state: State, settings: Settings | None = None, log: Log | None = None) -> None:
    """The poststop stage for an already parsed OCI state (pid and environment not needed)."""
    settings, log = _defaults(settings, log)
    state_dir = os.path.join(settings.state_dir, state.id)
    candidates: tuple[str, ...] = ()
    if not os.path.lexists(state_dir):
        # No prestart ran (or it cleaned up after itself). Only a journal to drop may remain.
        from oci_systemd_hook.activation import decide
        from oci_systemd_hook.spec import load_spec

        try:
            spec = load_spec(state.bundle)
        except InputError:
            return  # the bundle is gone: nothing of ours can be left
        if not decide(spec, state.annotations)[0]:
            return
        annotations = dict(spec.annotations)
        annotations.update(state.annotations)
        settings.apply_annotations(annotations)
        if settings.journal != "remove":
            return
        from oci_systemd_hook.ids import machine_id_candidates

        candidates = machine_id_candidates(state.id, spec.env_get("container_uuid"))
    from oci_systemd_hook.cleanup import poststop as clean
    from oci_systemd_hook.settings import duration_seconds, size_bytes

    bundle = "" if state.bundle == "/" else state.bundle
    max_use = 0 if settings.journal_max_use == "off" else size_bytes(settings.journal_max_use, 0)
    retention = (duration_seconds(settings.journal_max_age), max_use) if os.path.lexists(state_dir) else (0, 0)
    clean(settings.state_dir, state.id, bundle, log, settings.journal, settings.journal_root, candidates, retention)
