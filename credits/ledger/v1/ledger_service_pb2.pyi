import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AccountStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACCOUNT_STATUS_UNSPECIFIED: _ClassVar[AccountStatus]
    ACCOUNT_STATUS_ACTIVE: _ClassVar[AccountStatus]
    ACCOUNT_STATUS_ANONYMIZED: _ClassVar[AccountStatus]

class TransactionKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRANSACTION_KIND_UNSPECIFIED: _ClassVar[TransactionKind]
    TRANSACTION_KIND_PURCHASE: _ClassVar[TransactionKind]
    TRANSACTION_KIND_SPEND: _ClassVar[TransactionKind]
    TRANSACTION_KIND_GRANT: _ClassVar[TransactionKind]
    TRANSACTION_KIND_REFUND: _ClassVar[TransactionKind]
    TRANSACTION_KIND_CHARGEBACK: _ClassVar[TransactionKind]
    TRANSACTION_KIND_CHARGEBACK_REVERSAL: _ClassVar[TransactionKind]
    TRANSACTION_KIND_ADMIN_ADJUSTMENT: _ClassVar[TransactionKind]
    TRANSACTION_KIND_HOLD_CAPTURE: _ClassVar[TransactionKind]
    TRANSACTION_KIND_REFUND_REVERSAL: _ClassVar[TransactionKind]
    TRANSACTION_KIND_EXPIRY: _ClassVar[TransactionKind]

class GrantCategory(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GRANT_CATEGORY_UNSPECIFIED: _ClassVar[GrantCategory]
    GRANT_CATEGORY_PAID: _ClassVar[GrantCategory]
    GRANT_CATEGORY_PROMOTIONAL: _ClassVar[GrantCategory]

class PaymentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYMENT_STATUS_UNSPECIFIED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_INIT: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_PAID: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_CREDITED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_REFUNDED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_CHARGEBACK: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_FAILED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_EXPIRED: _ClassVar[PaymentStatus]

class DisputeStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DISPUTE_STATUS_UNSPECIFIED: _ClassVar[DisputeStatus]
    DISPUTE_STATUS_WARNING_NEEDS_RESPONSE: _ClassVar[DisputeStatus]
    DISPUTE_STATUS_WARNING_UNDER_REVIEW: _ClassVar[DisputeStatus]
    DISPUTE_STATUS_WARNING_CLOSED: _ClassVar[DisputeStatus]
    DISPUTE_STATUS_NEEDS_RESPONSE: _ClassVar[DisputeStatus]
    DISPUTE_STATUS_UNDER_REVIEW: _ClassVar[DisputeStatus]
    DISPUTE_STATUS_WON: _ClassVar[DisputeStatus]
    DISPUTE_STATUS_LOST: _ClassVar[DisputeStatus]

class RefundStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REFUND_STATUS_UNSPECIFIED: _ClassVar[RefundStatus]
    REFUND_STATUS_REQUIRES_ACTION: _ClassVar[RefundStatus]
    REFUND_STATUS_PENDING: _ClassVar[RefundStatus]
    REFUND_STATUS_SUCCEEDED: _ClassVar[RefundStatus]
    REFUND_STATUS_FAILED: _ClassVar[RefundStatus]
    REFUND_STATUS_CANCELED: _ClassVar[RefundStatus]

class EventOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_OUTCOME_UNSPECIFIED: _ClassVar[EventOutcome]
    EVENT_OUTCOME_APPLIED: _ClassVar[EventOutcome]
    EVENT_OUTCOME_IGNORED: _ClassVar[EventOutcome]
    EVENT_OUTCOME_REFUSED: _ClassVar[EventOutcome]

class HoldStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HOLD_STATUS_UNSPECIFIED: _ClassVar[HoldStatus]
    HOLD_STATUS_ACTIVE: _ClassVar[HoldStatus]
    HOLD_STATUS_CAPTURED: _ClassVar[HoldStatus]
    HOLD_STATUS_RELEASED: _ClassVar[HoldStatus]
    HOLD_STATUS_EXPIRED: _ClassVar[HoldStatus]

class PostingOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POSTING_OUTCOME_UNSPECIFIED: _ClassVar[PostingOutcome]
    POSTING_OUTCOME_APPLIED: _ClassVar[PostingOutcome]
    POSTING_OUTCOME_REPLAYED: _ClassVar[PostingOutcome]
    POSTING_OUTCOME_REFUSED: _ClassVar[PostingOutcome]
    POSTING_OUTCOME_NOT_APPLIED: _ClassVar[PostingOutcome]
ACCOUNT_STATUS_UNSPECIFIED: AccountStatus
ACCOUNT_STATUS_ACTIVE: AccountStatus
ACCOUNT_STATUS_ANONYMIZED: AccountStatus
TRANSACTION_KIND_UNSPECIFIED: TransactionKind
TRANSACTION_KIND_PURCHASE: TransactionKind
TRANSACTION_KIND_SPEND: TransactionKind
TRANSACTION_KIND_GRANT: TransactionKind
TRANSACTION_KIND_REFUND: TransactionKind
TRANSACTION_KIND_CHARGEBACK: TransactionKind
TRANSACTION_KIND_CHARGEBACK_REVERSAL: TransactionKind
TRANSACTION_KIND_ADMIN_ADJUSTMENT: TransactionKind
TRANSACTION_KIND_HOLD_CAPTURE: TransactionKind
TRANSACTION_KIND_REFUND_REVERSAL: TransactionKind
TRANSACTION_KIND_EXPIRY: TransactionKind
GRANT_CATEGORY_UNSPECIFIED: GrantCategory
GRANT_CATEGORY_PAID: GrantCategory
GRANT_CATEGORY_PROMOTIONAL: GrantCategory
PAYMENT_STATUS_UNSPECIFIED: PaymentStatus
PAYMENT_STATUS_INIT: PaymentStatus
PAYMENT_STATUS_PAID: PaymentStatus
PAYMENT_STATUS_CREDITED: PaymentStatus
PAYMENT_STATUS_REFUNDED: PaymentStatus
PAYMENT_STATUS_CHARGEBACK: PaymentStatus
PAYMENT_STATUS_FAILED: PaymentStatus
PAYMENT_STATUS_EXPIRED: PaymentStatus
DISPUTE_STATUS_UNSPECIFIED: DisputeStatus
DISPUTE_STATUS_WARNING_NEEDS_RESPONSE: DisputeStatus
DISPUTE_STATUS_WARNING_UNDER_REVIEW: DisputeStatus
DISPUTE_STATUS_WARNING_CLOSED: DisputeStatus
DISPUTE_STATUS_NEEDS_RESPONSE: DisputeStatus
DISPUTE_STATUS_UNDER_REVIEW: DisputeStatus
DISPUTE_STATUS_WON: DisputeStatus
DISPUTE_STATUS_LOST: DisputeStatus
REFUND_STATUS_UNSPECIFIED: RefundStatus
REFUND_STATUS_REQUIRES_ACTION: RefundStatus
REFUND_STATUS_PENDING: RefundStatus
REFUND_STATUS_SUCCEEDED: RefundStatus
REFUND_STATUS_FAILED: RefundStatus
REFUND_STATUS_CANCELED: RefundStatus
EVENT_OUTCOME_UNSPECIFIED: EventOutcome
EVENT_OUTCOME_APPLIED: EventOutcome
EVENT_OUTCOME_IGNORED: EventOutcome
EVENT_OUTCOME_REFUSED: EventOutcome
HOLD_STATUS_UNSPECIFIED: HoldStatus
HOLD_STATUS_ACTIVE: HoldStatus
HOLD_STATUS_CAPTURED: HoldStatus
HOLD_STATUS_RELEASED: HoldStatus
HOLD_STATUS_EXPIRED: HoldStatus
POSTING_OUTCOME_UNSPECIFIED: PostingOutcome
POSTING_OUTCOME_APPLIED: PostingOutcome
POSTING_OUTCOME_REPLAYED: PostingOutcome
POSTING_OUTCOME_REFUSED: PostingOutcome
POSTING_OUTCOME_NOT_APPLIED: PostingOutcome

class Grant(_message.Message):
    __slots__ = ("id", "category", "priority", "expire_time", "amount", "remaining", "reserved", "transaction_id", "payment_id", "create_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: int
    category: GrantCategory
    priority: int
    expire_time: _timestamp_pb2.Timestamp
    amount: int
    remaining: int
    reserved: int
    transaction_id: int
    payment_id: int
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[int] = ..., category: _Optional[_Union[GrantCategory, str]] = ..., priority: _Optional[int] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., amount: _Optional[int] = ..., remaining: _Optional[int] = ..., reserved: _Optional[int] = ..., transaction_id: _Optional[int] = ..., payment_id: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Transaction(_message.Message):
    __slots__ = ("id", "user_id", "delta", "balance_after", "kind", "idempotency_key", "reason", "reference", "payment_id", "admin_action_id", "hold_id", "create_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    BALANCE_AFTER_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ADMIN_ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: int
    user_id: str
    delta: int
    balance_after: int
    kind: TransactionKind
    idempotency_key: str
    reason: str
    reference: str
    payment_id: int
    admin_action_id: int
    hold_id: int
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[int] = ..., user_id: _Optional[str] = ..., delta: _Optional[int] = ..., balance_after: _Optional[int] = ..., kind: _Optional[_Union[TransactionKind, str]] = ..., idempotency_key: _Optional[str] = ..., reason: _Optional[str] = ..., reference: _Optional[str] = ..., payment_id: _Optional[int] = ..., admin_action_id: _Optional[int] = ..., hold_id: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetBalanceRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class GetBalanceResponse(_message.Message):
    __slots__ = ("user_id", "balance", "status", "update_time", "held", "available", "grants", "debt", "next_expire_time", "next_expiring_amount")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    DEBT_FIELD_NUMBER: _ClassVar[int]
    NEXT_EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    NEXT_EXPIRING_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    balance: int
    status: AccountStatus
    update_time: _timestamp_pb2.Timestamp
    held: int
    available: int
    grants: _containers.RepeatedCompositeFieldContainer[Grant]
    debt: int
    next_expire_time: _timestamp_pb2.Timestamp
    next_expiring_amount: int
    def __init__(self, user_id: _Optional[str] = ..., balance: _Optional[int] = ..., status: _Optional[_Union[AccountStatus, str]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., held: _Optional[int] = ..., available: _Optional[int] = ..., grants: _Optional[_Iterable[_Union[Grant, _Mapping]]] = ..., debt: _Optional[int] = ..., next_expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_expiring_amount: _Optional[int] = ...) -> None: ...

class CreditRequest(_message.Message):
    __slots__ = ("user_id", "amount", "idempotency_key", "reason", "reference", "metadata", "expire_time", "priority", "category")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    amount: int
    idempotency_key: str
    reason: str
    reference: str
    metadata: _containers.ScalarMap[str, str]
    expire_time: _timestamp_pb2.Timestamp
    priority: int
    category: GrantCategory
    def __init__(self, user_id: _Optional[str] = ..., amount: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., reason: _Optional[str] = ..., reference: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., priority: _Optional[int] = ..., category: _Optional[_Union[GrantCategory, str]] = ...) -> None: ...

class CreditResponse(_message.Message):
    __slots__ = ("transaction", "replayed")
    TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    transaction: Transaction
    replayed: bool
    def __init__(self, transaction: _Optional[_Union[Transaction, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class DebitRequest(_message.Message):
    __slots__ = ("user_id", "amount", "idempotency_key", "reason", "reference", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    amount: int
    idempotency_key: str
    reason: str
    reference: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, user_id: _Optional[str] = ..., amount: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., reason: _Optional[str] = ..., reference: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class DebitResponse(_message.Message):
    __slots__ = ("transaction", "replayed")
    TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    transaction: Transaction
    replayed: bool
    def __init__(self, transaction: _Optional[_Union[Transaction, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class ListTransactionsRequest(_message.Message):
    __slots__ = ("user_id", "page_size", "page_token")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    page_size: int
    page_token: str
    def __init__(self, user_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTransactionsResponse(_message.Message):
    __slots__ = ("transactions", "next_page_token")
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    transactions: _containers.RepeatedCompositeFieldContainer[Transaction]
    next_page_token: str
    def __init__(self, transactions: _Optional[_Iterable[_Union[Transaction, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class AdminAdjustRequest(_message.Message):
    __slots__ = ("user_id", "amount", "idempotency_key", "actor", "reason", "category", "expire_time", "priority")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    amount: int
    idempotency_key: str
    actor: str
    reason: str
    category: GrantCategory
    expire_time: _timestamp_pb2.Timestamp
    priority: int
    def __init__(self, user_id: _Optional[str] = ..., amount: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ..., category: _Optional[_Union[GrantCategory, str]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., priority: _Optional[int] = ...) -> None: ...

class AdminAdjustResponse(_message.Message):
    __slots__ = ("transaction", "replayed", "admin_action_id")
    TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    ADMIN_ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    transaction: Transaction
    replayed: bool
    admin_action_id: int
    def __init__(self, transaction: _Optional[_Union[Transaction, _Mapping]] = ..., replayed: _Optional[bool] = ..., admin_action_id: _Optional[int] = ...) -> None: ...

class AnonymizeRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class AnonymizeResponse(_message.Message):
    __slots__ = ("user_id", "already_anonymized", "payments_scrubbed_count", "metadata_erased_count", "balance")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ALREADY_ANONYMIZED_FIELD_NUMBER: _ClassVar[int]
    PAYMENTS_SCRUBBED_COUNT_FIELD_NUMBER: _ClassVar[int]
    METADATA_ERASED_COUNT_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    already_anonymized: bool
    payments_scrubbed_count: int
    metadata_erased_count: int
    balance: int
    def __init__(self, user_id: _Optional[str] = ..., already_anonymized: _Optional[bool] = ..., payments_scrubbed_count: _Optional[int] = ..., metadata_erased_count: _Optional[int] = ..., balance: _Optional[int] = ...) -> None: ...

class PaymentRefund(_message.Message):
    __slots__ = ("refund_id", "amount_minor", "status")
    REFUND_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    refund_id: str
    amount_minor: int
    status: RefundStatus
    def __init__(self, refund_id: _Optional[str] = ..., amount_minor: _Optional[int] = ..., status: _Optional[_Union[RefundStatus, str]] = ...) -> None: ...

class Payment(_message.Message):
    __slots__ = ("id", "user_id", "checkout_session_id", "payment_intent_id", "charge_id", "package_id", "credits", "amount_minor", "currency_code", "status", "amount_refunded_minor", "credits_clawed_back", "dispute_status", "dispute_id", "credit_transaction_id", "create_time", "update_time", "credit_time", "anonymized", "charge_amount_refunded_minor", "refunds", "amount_paid_minor", "amount_tax_minor", "amount_discount_minor", "settle_refusal")
    ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKOUT_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_INTENT_ID_FIELD_NUMBER: _ClassVar[int]
    CHARGE_ID_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_ID_FIELD_NUMBER: _ClassVar[int]
    CREDITS_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_REFUNDED_MINOR_FIELD_NUMBER: _ClassVar[int]
    CREDITS_CLAWED_BACK_FIELD_NUMBER: _ClassVar[int]
    DISPUTE_STATUS_FIELD_NUMBER: _ClassVar[int]
    DISPUTE_ID_FIELD_NUMBER: _ClassVar[int]
    CREDIT_TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    CREDIT_TIME_FIELD_NUMBER: _ClassVar[int]
    ANONYMIZED_FIELD_NUMBER: _ClassVar[int]
    CHARGE_AMOUNT_REFUNDED_MINOR_FIELD_NUMBER: _ClassVar[int]
    REFUNDS_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_PAID_MINOR_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_TAX_MINOR_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_DISCOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    SETTLE_REFUSAL_FIELD_NUMBER: _ClassVar[int]
    id: int
    user_id: str
    checkout_session_id: str
    payment_intent_id: str
    charge_id: str
    package_id: str
    credits: int
    amount_minor: int
    currency_code: str
    status: PaymentStatus
    amount_refunded_minor: int
    credits_clawed_back: int
    dispute_status: DisputeStatus
    dispute_id: str
    credit_transaction_id: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    credit_time: _timestamp_pb2.Timestamp
    anonymized: bool
    charge_amount_refunded_minor: int
    refunds: _containers.RepeatedCompositeFieldContainer[PaymentRefund]
    amount_paid_minor: int
    amount_tax_minor: int
    amount_discount_minor: int
    settle_refusal: str
    def __init__(self, id: _Optional[int] = ..., user_id: _Optional[str] = ..., checkout_session_id: _Optional[str] = ..., payment_intent_id: _Optional[str] = ..., charge_id: _Optional[str] = ..., package_id: _Optional[str] = ..., credits: _Optional[int] = ..., amount_minor: _Optional[int] = ..., currency_code: _Optional[str] = ..., status: _Optional[_Union[PaymentStatus, str]] = ..., amount_refunded_minor: _Optional[int] = ..., credits_clawed_back: _Optional[int] = ..., dispute_status: _Optional[_Union[DisputeStatus, str]] = ..., dispute_id: _Optional[str] = ..., credit_transaction_id: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., credit_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., anonymized: _Optional[bool] = ..., charge_amount_refunded_minor: _Optional[int] = ..., refunds: _Optional[_Iterable[_Union[PaymentRefund, _Mapping]]] = ..., amount_paid_minor: _Optional[int] = ..., amount_tax_minor: _Optional[int] = ..., amount_discount_minor: _Optional[int] = ..., settle_refusal: _Optional[str] = ...) -> None: ...

class EventSource(_message.Message):
    __slots__ = ("event_id", "event_type", "payload_sha256")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_SHA256_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    event_type: str
    payload_sha256: bytes
    def __init__(self, event_id: _Optional[str] = ..., event_type: _Optional[str] = ..., payload_sha256: _Optional[bytes] = ...) -> None: ...

class PaymentDetails(_message.Message):
    __slots__ = ("user_id", "checkout_session_id", "payment_intent_id", "charge_id", "package_id", "credits", "amount_minor", "currency_code", "customer_email", "customer_id", "amount_paid_minor", "amount_tax_minor", "amount_discount_minor", "grant_valid_days")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKOUT_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_INTENT_ID_FIELD_NUMBER: _ClassVar[int]
    CHARGE_ID_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_ID_FIELD_NUMBER: _ClassVar[int]
    CREDITS_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_EMAIL_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_PAID_MINOR_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_TAX_MINOR_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_DISCOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    GRANT_VALID_DAYS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    checkout_session_id: str
    payment_intent_id: str
    charge_id: str
    package_id: str
    credits: int
    amount_minor: int
    currency_code: str
    customer_email: str
    customer_id: str
    amount_paid_minor: int
    amount_tax_minor: int
    amount_discount_minor: int
    grant_valid_days: int
    def __init__(self, user_id: _Optional[str] = ..., checkout_session_id: _Optional[str] = ..., payment_intent_id: _Optional[str] = ..., charge_id: _Optional[str] = ..., package_id: _Optional[str] = ..., credits: _Optional[int] = ..., amount_minor: _Optional[int] = ..., currency_code: _Optional[str] = ..., customer_email: _Optional[str] = ..., customer_id: _Optional[str] = ..., amount_paid_minor: _Optional[int] = ..., amount_tax_minor: _Optional[int] = ..., amount_discount_minor: _Optional[int] = ..., grant_valid_days: _Optional[int] = ...) -> None: ...

class OpenPaymentRequest(_message.Message):
    __slots__ = ("details",)
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    details: PaymentDetails
    def __init__(self, details: _Optional[_Union[PaymentDetails, _Mapping]] = ...) -> None: ...

class OpenPaymentResponse(_message.Message):
    __slots__ = ("payment", "replayed")
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    replayed: bool
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class SettlePaymentRequest(_message.Message):
    __slots__ = ("details", "source")
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    details: PaymentDetails
    source: EventSource
    def __init__(self, details: _Optional[_Union[PaymentDetails, _Mapping]] = ..., source: _Optional[_Union[EventSource, _Mapping]] = ...) -> None: ...

class SettlePaymentResponse(_message.Message):
    __slots__ = ("payment", "credited", "transaction", "duplicate_event")
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    CREDITED_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_EVENT_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    credited: bool
    transaction: Transaction
    duplicate_event: bool
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ..., credited: _Optional[bool] = ..., transaction: _Optional[_Union[Transaction, _Mapping]] = ..., duplicate_event: _Optional[bool] = ...) -> None: ...

class FailPaymentRequest(_message.Message):
    __slots__ = ("details", "source")
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    details: PaymentDetails
    source: EventSource
    def __init__(self, details: _Optional[_Union[PaymentDetails, _Mapping]] = ..., source: _Optional[_Union[EventSource, _Mapping]] = ...) -> None: ...

class FailPaymentResponse(_message.Message):
    __slots__ = ("payment", "duplicate_event")
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_EVENT_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    duplicate_event: bool
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ..., duplicate_event: _Optional[bool] = ...) -> None: ...

class ApplyRefundRequest(_message.Message):
    __slots__ = ("details", "amount_refunded_minor", "source", "refunds")
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_REFUNDED_MINOR_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REFUNDS_FIELD_NUMBER: _ClassVar[int]
    details: PaymentDetails
    amount_refunded_minor: int
    source: EventSource
    refunds: _containers.RepeatedCompositeFieldContainer[PaymentRefund]
    def __init__(self, details: _Optional[_Union[PaymentDetails, _Mapping]] = ..., amount_refunded_minor: _Optional[int] = ..., source: _Optional[_Union[EventSource, _Mapping]] = ..., refunds: _Optional[_Iterable[_Union[PaymentRefund, _Mapping]]] = ...) -> None: ...

class ApplyRefundResponse(_message.Message):
    __slots__ = ("payment", "credits_clawed_back", "duplicate_event")
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    CREDITS_CLAWED_BACK_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_EVENT_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    credits_clawed_back: int
    duplicate_event: bool
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ..., credits_clawed_back: _Optional[int] = ..., duplicate_event: _Optional[bool] = ...) -> None: ...

class ApplyDisputeRequest(_message.Message):
    __slots__ = ("details", "dispute_id", "dispute_status", "source")
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    DISPUTE_ID_FIELD_NUMBER: _ClassVar[int]
    DISPUTE_STATUS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    details: PaymentDetails
    dispute_id: str
    dispute_status: DisputeStatus
    source: EventSource
    def __init__(self, details: _Optional[_Union[PaymentDetails, _Mapping]] = ..., dispute_id: _Optional[str] = ..., dispute_status: _Optional[_Union[DisputeStatus, str]] = ..., source: _Optional[_Union[EventSource, _Mapping]] = ...) -> None: ...

class ApplyDisputeResponse(_message.Message):
    __slots__ = ("payment", "credits_delta", "duplicate_event")
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    CREDITS_DELTA_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_EVENT_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    credits_delta: int
    duplicate_event: bool
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ..., credits_delta: _Optional[int] = ..., duplicate_event: _Optional[bool] = ...) -> None: ...

class RecordEventRequest(_message.Message):
    __slots__ = ("source", "outcome", "detail", "user_id", "payment_intent_id")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_INTENT_ID_FIELD_NUMBER: _ClassVar[int]
    source: EventSource
    outcome: EventOutcome
    detail: str
    user_id: str
    payment_intent_id: str
    def __init__(self, source: _Optional[_Union[EventSource, _Mapping]] = ..., outcome: _Optional[_Union[EventOutcome, str]] = ..., detail: _Optional[str] = ..., user_id: _Optional[str] = ..., payment_intent_id: _Optional[str] = ...) -> None: ...

class RecordEventResponse(_message.Message):
    __slots__ = ("duplicate_event", "outcome")
    DUPLICATE_EVENT_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    duplicate_event: bool
    outcome: EventOutcome
    def __init__(self, duplicate_event: _Optional[bool] = ..., outcome: _Optional[_Union[EventOutcome, str]] = ...) -> None: ...

class GetPaymentRequest(_message.Message):
    __slots__ = ("payment_id", "checkout_session_id", "payment_intent_id", "charge_id")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKOUT_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_INTENT_ID_FIELD_NUMBER: _ClassVar[int]
    CHARGE_ID_FIELD_NUMBER: _ClassVar[int]
    payment_id: int
    checkout_session_id: str
    payment_intent_id: str
    charge_id: str
    def __init__(self, payment_id: _Optional[int] = ..., checkout_session_id: _Optional[str] = ..., payment_intent_id: _Optional[str] = ..., charge_id: _Optional[str] = ...) -> None: ...

class GetPaymentResponse(_message.Message):
    __slots__ = ("payment",)
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ...) -> None: ...

class ListPaymentsRequest(_message.Message):
    __slots__ = ("user_id", "start_create_time", "end_create_time", "page_size", "page_token", "payment_intent_ids")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    START_CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    END_CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_INTENT_IDS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    start_create_time: _timestamp_pb2.Timestamp
    end_create_time: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    payment_intent_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, user_id: _Optional[str] = ..., start_create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., payment_intent_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ListPaymentsResponse(_message.Message):
    __slots__ = ("payments", "next_page_token")
    PAYMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    payments: _containers.RepeatedCompositeFieldContainer[Payment]
    next_page_token: str
    def __init__(self, payments: _Optional[_Iterable[_Union[Payment, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Hold(_message.Message):
    __slots__ = ("id", "user_id", "amount", "captured_amount", "status", "idempotency_key", "reason", "create_time", "expire_time", "end_time", "capture_transaction_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    user_id: str
    amount: int
    captured_amount: int
    status: HoldStatus
    idempotency_key: str
    reason: str
    create_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    capture_transaction_id: int
    def __init__(self, id: _Optional[int] = ..., user_id: _Optional[str] = ..., amount: _Optional[int] = ..., captured_amount: _Optional[int] = ..., status: _Optional[_Union[HoldStatus, str]] = ..., idempotency_key: _Optional[str] = ..., reason: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., capture_transaction_id: _Optional[int] = ...) -> None: ...

class ReserveCreditsRequest(_message.Message):
    __slots__ = ("user_id", "amount", "idempotency_key", "reason", "ttl_seconds")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    amount: int
    idempotency_key: str
    reason: str
    ttl_seconds: int
    def __init__(self, user_id: _Optional[str] = ..., amount: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., reason: _Optional[str] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class ReserveCreditsResponse(_message.Message):
    __slots__ = ("hold", "replayed")
    HOLD_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    hold: Hold
    replayed: bool
    def __init__(self, hold: _Optional[_Union[Hold, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class CaptureHoldRequest(_message.Message):
    __slots__ = ("user_id", "hold_id", "amount", "idempotency_key")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    hold_id: int
    amount: int
    idempotency_key: str
    def __init__(self, user_id: _Optional[str] = ..., hold_id: _Optional[int] = ..., amount: _Optional[int] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class CaptureHoldResponse(_message.Message):
    __slots__ = ("hold", "transaction", "replayed")
    HOLD_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    hold: Hold
    transaction: Transaction
    replayed: bool
    def __init__(self, hold: _Optional[_Union[Hold, _Mapping]] = ..., transaction: _Optional[_Union[Transaction, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class ReleaseHoldRequest(_message.Message):
    __slots__ = ("user_id", "hold_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    hold_id: int
    def __init__(self, user_id: _Optional[str] = ..., hold_id: _Optional[int] = ...) -> None: ...

class ReleaseHoldResponse(_message.Message):
    __slots__ = ("hold", "replayed")
    HOLD_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    hold: Hold
    replayed: bool
    def __init__(self, hold: _Optional[_Union[Hold, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class GetHoldRequest(_message.Message):
    __slots__ = ("user_id", "hold_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    hold_id: int
    def __init__(self, user_id: _Optional[str] = ..., hold_id: _Optional[int] = ...) -> None: ...

class GetHoldResponse(_message.Message):
    __slots__ = ("hold",)
    HOLD_FIELD_NUMBER: _ClassVar[int]
    hold: Hold
    def __init__(self, hold: _Optional[_Union[Hold, _Mapping]] = ...) -> None: ...

class ListHoldsRequest(_message.Message):
    __slots__ = ("user_id", "page_size", "page_token", "active_only")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_ONLY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    page_size: int
    page_token: str
    active_only: bool
    def __init__(self, user_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., active_only: _Optional[bool] = ...) -> None: ...

class ListHoldsResponse(_message.Message):
    __slots__ = ("holds", "next_page_token")
    HOLDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    holds: _containers.RepeatedCompositeFieldContainer[Hold]
    next_page_token: str
    def __init__(self, holds: _Optional[_Iterable[_Union[Hold, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ExpirePaymentRequest(_message.Message):
    __slots__ = ("details", "source")
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    details: PaymentDetails
    source: EventSource
    def __init__(self, details: _Optional[_Union[PaymentDetails, _Mapping]] = ..., source: _Optional[_Union[EventSource, _Mapping]] = ...) -> None: ...

class ExpirePaymentResponse(_message.Message):
    __slots__ = ("payment", "duplicate_event")
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_EVENT_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    duplicate_event: bool
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ..., duplicate_event: _Optional[bool] = ...) -> None: ...

class SettlePaymentManuallyRequest(_message.Message):
    __slots__ = ("payment_id", "actor", "reason")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    payment_id: int
    actor: str
    reason: str
    def __init__(self, payment_id: _Optional[int] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class SettlePaymentManuallyResponse(_message.Message):
    __slots__ = ("payment", "transaction", "replayed", "admin_action_id")
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    ADMIN_ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    transaction: Transaction
    replayed: bool
    admin_action_id: int
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ..., transaction: _Optional[_Union[Transaction, _Mapping]] = ..., replayed: _Optional[bool] = ..., admin_action_id: _Optional[int] = ...) -> None: ...

class Refusal(_message.Message):
    __slots__ = ("code", "reason", "message", "metadata", "field")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    code: int
    reason: str
    message: str
    metadata: _containers.ScalarMap[str, str]
    field: str
    def __init__(self, code: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., field: _Optional[str] = ...) -> None: ...

class BatchPosting(_message.Message):
    __slots__ = ("credit", "debit")
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    DEBIT_FIELD_NUMBER: _ClassVar[int]
    credit: CreditRequest
    debit: DebitRequest
    def __init__(self, credit: _Optional[_Union[CreditRequest, _Mapping]] = ..., debit: _Optional[_Union[DebitRequest, _Mapping]] = ...) -> None: ...

class PostBatchRequest(_message.Message):
    __slots__ = ("postings", "atomic")
    POSTINGS_FIELD_NUMBER: _ClassVar[int]
    ATOMIC_FIELD_NUMBER: _ClassVar[int]
    postings: _containers.RepeatedCompositeFieldContainer[BatchPosting]
    atomic: bool
    def __init__(self, postings: _Optional[_Iterable[_Union[BatchPosting, _Mapping]]] = ..., atomic: _Optional[bool] = ...) -> None: ...

class PostingResult(_message.Message):
    __slots__ = ("outcome", "transaction", "refusal")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    outcome: PostingOutcome
    transaction: Transaction
    refusal: Refusal
    def __init__(self, outcome: _Optional[_Union[PostingOutcome, str]] = ..., transaction: _Optional[_Union[Transaction, _Mapping]] = ..., refusal: _Optional[_Union[Refusal, _Mapping]] = ...) -> None: ...

class PostBatchResponse(_message.Message):
    __slots__ = ("results", "applied_count", "replayed_count", "refused_count", "not_applied_count")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_COUNT_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_COUNT_FIELD_NUMBER: _ClassVar[int]
    REFUSED_COUNT_FIELD_NUMBER: _ClassVar[int]
    NOT_APPLIED_COUNT_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[PostingResult]
    applied_count: int
    replayed_count: int
    refused_count: int
    not_applied_count: int
    def __init__(self, results: _Optional[_Iterable[_Union[PostingResult, _Mapping]]] = ..., applied_count: _Optional[int] = ..., replayed_count: _Optional[int] = ..., refused_count: _Optional[int] = ..., not_applied_count: _Optional[int] = ...) -> None: ...

class SettlePaymentBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[SettlePaymentRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[SettlePaymentRequest, _Mapping]]] = ...) -> None: ...

class SettlePaymentResult(_message.Message):
    __slots__ = ("settled", "refusal")
    SETTLED_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    settled: SettlePaymentResponse
    refusal: Refusal
    def __init__(self, settled: _Optional[_Union[SettlePaymentResponse, _Mapping]] = ..., refusal: _Optional[_Union[Refusal, _Mapping]] = ...) -> None: ...

class SettlePaymentBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SettlePaymentResult]
    def __init__(self, results: _Optional[_Iterable[_Union[SettlePaymentResult, _Mapping]]] = ...) -> None: ...
