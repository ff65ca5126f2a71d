"""engine.BuildProgress: the cache report read from BuildKit's plain progress (lines as 20.10 prints them)."""

# ruff: noqa: E501 - BuildKit prints long lines; the sample keeps them as printed
from airflow_image_factory.engine import BuildProgress

PROGRESS = """\
#4 [ui-build 1/5] FROM localhost:5000/library/python@sha256:629cc1d3
#4 CACHED
#9 [docker-context-files 1/1] COPY include/docker/docker-context-files.README.md docker-context-file[s] /
#9 CACHED
#12 [ui-build 2/5] RUN --mount=type=secret,id=extra_ca,required=false     --mount=type=cache,id=x,target=/root/.cache/pip bash /opt/image-scripts/compile_ui_assets.sh toolchain
#12 CACHED
#18 [airflow-distributions-sources 3/3] RUN --mount=type=bind,from=airflow-sources,target=/airflow-sources bash /opt/image-scripts/install_airflow.sh distributions /dist
#18 0.512 Building the wheel of task-sdk
#18 DONE 7.0s
#19 [main  4/11] RUN --mount=type=cache,id=airflow-pip-cache,target=/root/.cache/pip bash install_airflow.sh dependencies
#19 CACHED
"""


def progress() -> BuildProgress:
    report = BuildProgress()
    for line in PROGRESS.splitlines():
        report.feed(line)
    return report


def test_steps_served_by_the_cache_and_steps_that_ran():
    report = progress()
    assert len(report.steps) == 4  # the FROM is not a step
    assert report.cached_steps == {"9", "12", "19"}
    assert report.ran_steps == (
        "[airflow-distributions-sources 3/3] RUN bash /opt/image-scripts/install_airflow.sh distributions /dist",
    )


def test_a_step_name_keeps_the_stage_and_drops_the_mount_options():
    names = progress().steps.values()
    assert "[main  4/11] RUN bash install_airflow.sh dependencies" in names
    assert not [n for n in names if "--mount" in n]
