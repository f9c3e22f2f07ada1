"""The actors of a run: Ray start-up, placement, and orderly shutdown.

Generators (one vLLM engine each) and learner ranks get placement-group bundles, so on a cluster
they spread over nodes (`cluster.placement_strategy`); labellers are light and placed freely.
Generators and labellers are restartable (Ray `max_restarts`); the controller re-issues their work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pfrl.config import PfrlConfig
from pfrl.console import console
from pfrl.errors import UserError

log = logging.getLogger(__name__)


def start_ray(cfg: PfrlConfig, log_to_driver: bool = True) -> bool:
    """Join `cluster.ray_address`, or start a local Ray of `cluster.num_cpus`: every command that needs
    Ray starts it here, so each gets the same worker environment. False when Ray was already up
    (the caller then leaves it running). `log_to_driver=False` keeps workers' logs in Ray's session
    directory, for commands whose own output is a progress bar."""
    import ray

    if ray.is_initialized():
        return False
    env = {"env_vars": {"TOKENIZERS_PARALLELISM": "false"}}  # tokenizers' threads fight the actors' on few cores
    if cfg.cluster.ray_address:
        try:
            ray.init(address=cfg.cluster.ray_address, runtime_env=env, log_to_driver=log_to_driver)
        except (ConnectionError, RuntimeError) as e:
            raise UserError(f"cluster.ray_address={cfg.cluster.ray_address}: cannot join Ray cluster ({e})") from None
    else:
        ray.init(num_cpus=cfg.cluster.num_cpus, include_dashboard=False, runtime_env=env, log_to_driver=log_to_driver)
    console.print(f"Ray: {ray.cluster_resources().get('CPU', 0):.0f} CPUs, "
                  f"{ray.cluster_resources().get('GPU', 0):.0f} GPUs, {len(ray.nodes())} node(s)")
    return True


def _generator_placement(cfg: PfrlConfig):
    """One bundle per generator (its TP group's GPUs), spread or packed as configured."""
    import ray
    from ray.util.placement_group import placement_group

    c = cfg.cluster
    bundle = c.generator_bundle()
    if not bundle:
        return None
    pg = placement_group([dict(bundle) for _ in range(cfg.generator.num_generators)], strategy=c.placement_strategy)
    ready, _ = ray.wait([pg.ready()], timeout=cfg.learner.start_timeout_s)
    if not ready:
        raise UserError(f"Ray could not place {cfg.generator.num_generators} generators of {bundle} "
                        f"(cluster resources: {ray.cluster_resources()})")
    return pg


@dataclass
class Fleet:
    generators: list[Any] = field(default_factory=list)
    labellers: list[Any] = field(default_factory=list)
    learner: Any = None
    generator_pg: Any = None
    generator_instances: list[str] = field(default_factory=list)  # each generator's instance at start

    @classmethod
    def start(cls, cfg: PfrlConfig, model_path: str) -> Fleet:
        fleet = cls()
        try:
            fleet._start_learner(cfg, model_path)
            fleet._start_generators(cfg, model_path)
            fleet._start_labellers(cfg)
        except BaseException:
            fleet.shutdown()
            raise
        return fleet

    def _start_learner(self, cfg: PfrlConfig, model_path: str) -> None:
        from pfrl.learner_group import LearnerGroup

        console.print(f"starting {cfg.learner.num_learners} learner rank(s) (DeepSpeed ZeRO-{cfg.learner.zero_stage})")
        self.learner = LearnerGroup(cfg, model_path, cfg.run.seed)

    def _start_generators(self, cfg: PfrlConfig, model_path: str) -> None:
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        from actors.generator import spawn_generator

        console.print(f"starting {cfg.generator.num_generators} vLLM generator(s)")
        self.generator_pg = _generator_placement(cfg)
        for i in range(cfg.generator.num_generators):
            opts = {}
            if self.generator_pg is not None:
                opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(self.generator_pg, placement_group_bundle_index=i)
            self.generators.append(spawn_generator(
                model_path, cfg.generator, cfg.model, cfg.sync, cfg.run.seed, i,
                num_cpus=cfg.cluster.generator_cpus, num_gpus=cfg.cluster.generator_gpus, **opts,
            ))
        # Engine start-up is the slow part (tens of seconds on CPU): wait for all at once.
        healths = ray.get([g.health.remote() for g in self.generators])
        self.generator_instances = [h["instance_id"] for h in healths]

    def _start_labellers(self, cfg: PfrlConfig) -> None:
        import ray

        from actors.labeller import LabellerActor

        self.labellers = [
            # ray.remote turns the class into an actor class; its stubs still type it as LabellerActor
            LabellerActor.options(  # type: ignore[attr-defined]
                num_cpus=cfg.cluster.labeller_cpus, max_restarts=-1, max_task_retries=0
            ).remote(
                cfg.run.task, cfg.labeller.model_dump(), cfg.run.seed
            )
            for _ in range(cfg.labeller.num_labellers)
        ]
        ray.get([lab.ping.remote() for lab in self.labellers])

    def placement(self) -> dict[str, Any]:
        """Which node holds each generator and learner rank (by placement-group bundle), and what
        each node offers: written to RUN_DIR/placement.json so a cluster layout can be checked."""
        import ray
        from ray.util.placement_group import placement_group_table

        def nodes_of(pg, count: int) -> list[str | None]:
            if pg is None:
                return [None] * count
            table = placement_group_table(pg)["bundles_to_node_id"]
            return [table.get(i) for i in range(count)]

        return {
            "generators": nodes_of(self.generator_pg, len(self.generators)),
            "learners": nodes_of(self.learner.pg, len(self.learner.actors)),
            "nodes": {n["NodeID"]: {"ip": n["NodeManagerAddress"], "resources": n["Resources"]}
                      for n in ray.nodes() if n["Alive"]},
        }

    def shutdown(self) -> None:
        import ray

        for actor in [*self.generators, *self.labellers]:
            try:
                ray.get(actor.stop.remote(), timeout=30)
            except Exception as e:  # already dead, or stuck: killed below either way
                log.debug("stop failed: %s", e)
            ray.kill(actor, no_restart=True)
        if self.learner is not None:
            self.learner.shutdown()
        if self.generator_pg is not None:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(self.generator_pg)
        self.generators, self.labellers, self.learner = [], [], None
