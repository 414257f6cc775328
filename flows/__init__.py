"""Prefect orchestration of medvol (installed as ``medvol.flows``).

Import the submodules explicitly; importing them imports Prefect (1–3 s)::

    from medvol.flows.pipeline import study_pipeline, batch_pipeline
    from medvol.flows.watch import watch_inbox, poll_inbox
    from medvol.flows.runners import make_task_runner

See ``docs/flows.md`` for running embedded, serving on a schedule and scaling out.
"""
