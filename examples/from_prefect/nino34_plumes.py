# prefect-dask's README, "Integrate with Prefect flows", the "After" example
# (src/integrations/prefect-dask/README.md in PrefectHQ/prefect): twelve image
# downloads submitted to a DaskTaskRunner.  Changed: the import lines
# (prefect -> daskflow.compat.prefect, prefect_dask -> daskflow.compat.prefect_dask)
# and the archive's base URL, read from NMME_ARCHIVE_URL (default the real one).
import os
from typing import List
from pathlib import Path

import httpx
from daskflow.compat.prefect import flow, task
from daskflow.compat.prefect_dask import DaskTaskRunner

URL_FORMAT = (
    os.environ.get("NMME_ARCHIVE_URL", "https://www.cpc.ncep.noaa.gov/products/NMME/archive/")
    + "{year:04d}{month:02d}0800/current/images/nino34.rescaling.ENSMEAN.png"
)


@task
def download_image(year: int, month: int, directory: Path) -> Path:
    # download image from URL
    url = URL_FORMAT.format(year=year, month=month)
    resp = httpx.get(url)

    # save content to directory/YYYYMM.png
    file_path = (directory / url.split("/")[-1]).with_stem(f"{year:04d}{month:02d}")
    file_path.write_bytes(resp.content)
    return file_path


@flow(task_runner=DaskTaskRunner(cluster_kwargs={"processes": False}))
def download_nino_34_plumes_from_year(year: int) -> List[Path]:
    # create a directory to hold images
    directory = Path("data")
    directory.mkdir(exist_ok=True)

    # download all images
    file_paths = []
    for month in range(1, 12 + 1):
        file_path = download_image.submit(year, month, directory)
        file_paths.append(file_path)
    return file_paths


if __name__ == "__main__":
    download_nino_34_plumes_from_year(2022)
