"""Files: accept (dedup + place), read, list, download, extract, copy and delete.

One module per use case; this package's names are the ones routes and jobs call."""

from app.services.files.copies import replicate
from app.services.files.extract import extract
from app.services.files.pins import set_pinned
from app.services.files.queries import events, get_file, list_files, open_content, read_file
from app.services.files.retire import collect_blob, delete_file, expire_file, remove_copy
from app.services.files.upload import create_file, find_declared, reuse_declared
from app.services.files.views import (
    CreateResult,
    FilePage,
    FileView,
    IncomingUpload,
    new_file_id,
    valid_file_id,
)

__all__ = [
    "CreateResult",
    "FilePage",
    "FileView",
    "IncomingUpload",
    "collect_blob",
    "create_file",
    "delete_file",
    "events",
    "expire_file",
    "extract",
    "find_declared",
    "get_file",
    "list_files",
    "new_file_id",
    "open_content",
    "read_file",
    "remove_copy",
    "replicate",
    "reuse_declared",
    "set_pinned",
    "valid_file_id",
]
