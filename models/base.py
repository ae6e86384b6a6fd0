import datetime as dt

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData

# Explicit constraint names, so Alembic migrations are the same on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Ids beyond a 32-bit integer exist in no table, and SQLite overflows on them: look such ids up as missing.
MAX_ID = 2**31 - 1

db = SQLAlchemy(metadata=MetaData(naming_convention=NAMING_CONVENTION))


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
