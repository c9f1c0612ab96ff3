from assistantd.db.engine import Database
from assistantd.db.models import Base

__all__ = ["Base", "Database"]
