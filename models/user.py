"""The people who use the dashboard: dermatologists, who see the hospitals they are assigned to, and admins,
who see every hospital and manage hospitals, keys, users and models. Passwords are kept as scrypt hashes
(Werkzeug); a changed password ends every session signed in with the old one."""

import datetime as dt

from sqlalchemy import Boolean, Column, DateTime, ForeignKey, String, Table
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from models.base import db, utcnow


class Role:
    DERMATOLOGIST = "dermatologist"
    ADMIN = "admin"
    ALL = (DERMATOLOGIST, ADMIN)


MIN_PASSWORD_LENGTH = 10

user_hospitals = Table(
    "user_hospitals", db.metadata,
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("hospital_id", ForeignKey("hospitals.id", ondelete="CASCADE"), primary_key=True),
)


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    role: Mapped[str] = mapped_column(String(20), default=Role.DERMATOLOGIST)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    hospitals = relationship("Hospital", secondary=user_hospitals, order_by="Hospital.name")

    @staticmethod
    def normal_email(email: str) -> str:
        return email.strip().lower()

    @classmethod
    def by_email(cls, email: str) -> "User | None":
        return db.session.scalar(db.select(cls).where(cls.email == cls.normal_email(email)))

    def set_password(self, password: str) -> None:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise ValueError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
        self.password_hash = generate_password_hash(password, method="scrypt")

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    def hospital_ids(self) -> list[int] | None:
        """The hospitals whose data this user may see: None for all of them (an admin)."""
        return None if self.is_admin else [hospital.id for hospital in self.hospitals]

    def may_see(self, hospital_id: int) -> bool:
        allowed = self.hospital_ids()
        return allowed is None or hospital_id in allowed

    # Flask-Login's protocol. The session names the user with a piece of the password hash, so a changed
    # password (or a deactivated account) ends the sessions signed in before.
    @property
    def session_id(self) -> str:
        return f"{self.id}:{self.password_hash[-16:]}"

    def get_id(self) -> str:
        return self.session_id

    @property
    def is_active(self) -> bool:
        return self.active

    is_authenticated = True
    is_anonymous = False
