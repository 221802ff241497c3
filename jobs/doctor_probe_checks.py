"""What the probe job's answer (``experiments/_doctor/<time>-probe.json``, see :mod:`jobs.doctor_probe`) means, as
ok / warning / problem lines: a pure function of the JSON, so it is tested without a cluster."""

from __future__ import annotations

from .doctor_host import build_check, gpu_checks
from .doctor_report import Check, ok, problem, warning
from .executor import gpus_per_node


def probe_checks(exp, answer: dict) -> list[Check]:
    where = f"job {answer.get('job_id')}, partition {answer.get('partition')}"
    out = [ok("compute node", f"{answer.get('host')} ({where})")]
    if answer.get("device_error"):
        out.append(problem("torch on the node", answer["device_error"], "see the job log in experiments/_doctor/logs"))
    if "torch" in answer:
        gpus = answer.get("gpus") or []
        wants_gpu = gpus_per_node(exp) > 0
        out.append(build_check(answer["torch"], wants_gpu))
        out += gpu_checks(gpus, answer["torch"].get("arch_list") or [])
        if not gpus:
            given = answer.get("allocated")
            out.append(problem("GPUs on the node", f"the job was given a GPU ({given}) but torch sees none")
                       if given else problem("GPUs on the node", "none visible, although slurm: asks for one")
                       if wants_gpu else ok("GPUs on the node", "none (a CPU job)"))
    if "usr2" in answer:
        out += [_usr2_check(answer["usr2"]), _scontrol_check(answer.get("scontrol"))]
    if "benchmark" in answer:
        out += _benchmark_checks(answer["benchmark"])
    return out


def _usr2_check(usr2: dict) -> Check:
    topic = "pre-emption warning"
    if usr2.get("arrived"):
        return ok(topic, f"USR2 reached the Python process {usr2.get('after_s')} s after `{usr2.get('command')}` "
                         f"(the path of --signal=USR2@N and of pre-emption with send_user_signal)")
    if usr2.get("error"):
        return problem(topic, f"not tested: {usr2['error']}", "the jobs cannot save before a time limit without it")
    return problem(topic, f"USR2 did not reach the Python process within {usr2.get('waited_s')} s of "
                          f"`{usr2.get('command')}`: jobs would be killed at the time limit without saving",
                   "check that slurm.setup does not replace the srun step (no `exec`), and ask the admins whether "
                   "job steps receive signals (ProctrackType)")


def _scontrol_check(path: str | None) -> Check:
    if path:
        return ok("scontrol on the node", f"{path} (the jobs requeue themselves with it)")
    return problem("scontrol on the node", "not found: a job warned by USR2 saves but cannot requeue itself (it "
                                           "fails; make submit continues from its checkpoint)",
                   "add the folder holding scontrol to PATH in slurm.setup, or ask the admins")


def _benchmark_checks(bench: dict) -> list[Check]:
    if bench.get("error"):
        return [problem("device", bench["error"])]
    out = []
    for r in bench.get("results", []):
        topic = f"benchmark {r['precision']}"
        if "error" in r:
            out.append(warning(topic, r["error"]))
        elif not r.get("loss_finite", True):
            out.append(warning(topic, f"{r['img_per_s']:g} img/s but the loss was not finite",
                               f"avoid train.precision={r['precision']} on this device"))
        else:
            out.append(ok(topic, f"{r['img_per_s']:g} img/s ({bench['experiment']}, {bench['arch']}, batch "
                                 f"{r['batch']}, {r['steps']} steps of {r['ms_per_step']:g} ms on {r['device']})"))
    if bench.get("note"):
        out.append(warning("benchmark data", bench["note"], "run make data where the compute nodes can read it"))
    return out
