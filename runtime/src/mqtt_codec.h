/*
 * MQTT 3.1.1 / 5 packet codec for the durable session (msess.c): pure
 * functions, no I/O, no allocation. Only the packets a client sends
 * (CONNECT, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE,
 * UNSUBSCRIBE, PINGREQ, DISCONNECT) are encoded, and only those a broker
 * sends it are decoded.
 *
 * Encoders work like snprintf: they return the packet's full size and
 * write it only when it fits in cap (out may be NULL with cap 0 to size
 * it). They return 0 for arguments no packet can carry (a string longer
 * than 65535 bytes, a remaining length over 268435455).
 *
 * Decoders take the packet's first byte and its body (everything after the
 * remaining length) and check every length against the body. They return
 * 0, or the MQTT 5 reason code that describes the fault (MQTT_RC_MALFORMED,
 * MQTT_RC_PROTOCOL_ERROR, MQTT_RC_TOPIC_NAME_INVALID) with *why set to a
 * static explanation. Pointers in the decoded structs point into the body.
 */
#ifndef WISP_MQTT_CODEC_H
#define WISP_MQTT_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum mqtt_type {
    MQTT_CONNECT = 1,
    MQTT_CONNACK = 2,
    MQTT_PUBLISH = 3,
    MQTT_PUBACK = 4,
    MQTT_PUBREC = 5,
    MQTT_PUBREL = 6,
    MQTT_PUBCOMP = 7,
    MQTT_SUBSCRIBE = 8,
    MQTT_SUBACK = 9,
    MQTT_UNSUBSCRIBE = 10,
    MQTT_UNSUBACK = 11,
    MQTT_PINGREQ = 12,
    MQTT_PINGRESP = 13,
    MQTT_DISCONNECT = 14,
    MQTT_AUTH = 15,
};

enum {
    MQTT_MAX_REMAINING = 268435455, /* 4-byte variable byte integer */
    MQTT_MAX_FIXED_HEADER = 5,
    MQTT_MAX_STRING = 65535,
};

/* MQTT 5 reason codes this client produces or names specially. */
enum {
    MQTT_RC_SUCCESS = 0x00,
    MQTT_RC_NO_SUBSCRIPTION = 0x11,
    MQTT_RC_UNSPECIFIED = 0x80,
    MQTT_RC_MALFORMED = 0x81,
    MQTT_RC_PROTOCOL_ERROR = 0x82,
    MQTT_RC_TOPIC_NAME_INVALID = 0x90,
    MQTT_RC_RECEIVE_MAX_EXCEEDED = 0x93,
    MQTT_RC_TOPIC_ALIAS_INVALID = 0x94,
    MQTT_RC_PACKET_TOO_LARGE = 0x95,
};

struct mqtt_connect {
    int version; /* 4 or 5 */
    const char *client_id;
    size_t client_id_len;
    const char *username; /* NULL: none */
    size_t username_len;
    const char *password; /* NULL: none */
    size_t password_len;
    uint16_t keepalive_s;
    bool clean; /* clean session (v4) / clean start (v5) */
    /* v5 properties, sent when non-zero */
    uint32_t session_expiry_s;
    uint16_t receive_max;
    uint32_t max_packet;
};

struct mqtt_filter {
    const char *filter;
    size_t len;
    uint8_t qos;
};

/* The v5 properties the session reads; the rest are checked and skipped. */
struct mqtt_props {
    bool has_session_expiry, has_receive_max, has_max_packet, has_server_keepalive;
    bool has_topic_alias, has_topic_alias_max, has_max_qos, has_assigned_id;
    bool has_retain_available;
    uint32_t session_expiry;
    uint16_t receive_max;
    uint32_t max_packet;
    uint16_t server_keepalive;
    uint16_t topic_alias;
    uint16_t topic_alias_max;
    uint8_t max_qos;
    uint8_t retain_available;
    const uint8_t *assigned_id; /* Assigned Client Identifier */
    size_t assigned_id_len;
    const uint8_t *reason; /* Reason String, NULL when absent */
    size_t reason_len;
    const uint8_t *server_ref; /* Server Reference, NULL when absent */
    size_t server_ref_len;
};

struct mqtt_connack {
    bool session_present;
    uint8_t code; /* v4 return code or v5 reason code */
    struct mqtt_props props;
};

struct mqtt_publish {
    uint8_t qos;
    bool dup, retain;
    uint16_t pid; /* 0 for QoS 0 */
    const uint8_t *topic;
    size_t topic_len; /* 0 only with a v5 Topic Alias */
    struct mqtt_props props;
    const uint8_t *payload;
    size_t payload_len;
};

/* An outbound PUBLISH. */
struct mqtt_pubmsg {
    const char *topic;
    size_t topic_len;
    const void *payload; /* may be NULL when payload_len is 0 */
    size_t payload_len;
    uint8_t qos;
    bool retain, dup;
    uint16_t pid;         /* QoS 1/2 only, non-zero */
    const char *user_key; /* v5: one User Property when non-NULL (ignored in v4) */
    size_t user_key_len;
    const char *user_value;
    size_t user_value_len;
};

/* PUBACK, PUBREC, PUBREL, PUBCOMP (pid, code), SUBACK and UNSUBACK (pid,
 * codes). */
struct mqtt_ack {
    uint16_t pid;
    uint8_t code;         /* PUBACK/PUBREC/PUBREL/PUBCOMP reason code (0 when absent) */
    const uint8_t *codes; /* SUBACK/UNSUBACK reason codes; NULL for a v4 UNSUBACK */
    size_t ncodes;
    struct mqtt_props props;
};

struct mqtt_disconnect {
    uint8_t code;
    struct mqtt_props props;
};

/* Size of a variable byte integer (1..4), 0 when v > MQTT_MAX_REMAINING. */
size_t mqtt_varint_size(uint32_t v);

/* Reads the fixed header at p[0..len): 1 with *first, *remaining and
 * *header_len set; 0 when more bytes are needed; -1 when the remaining
 * length is malformed (more than 4 bytes). */
int mqtt_decode_header(const uint8_t *p, size_t len, uint8_t *first, uint32_t *remaining,
                       size_t *header_len);

size_t mqtt_encode_connect(uint8_t *out, size_t cap, const struct mqtt_connect *c);
size_t mqtt_encode_subscribe(uint8_t *out, size_t cap, int version, uint16_t pid,
                             const struct mqtt_filter *f, size_t n);
size_t mqtt_encode_unsubscribe(uint8_t *out, size_t cap, int version, uint16_t pid,
                               const struct mqtt_filter *f, size_t n);
/* Size one filter adds to a SUBSCRIBE (unsub false) or UNSUBSCRIBE. */
size_t mqtt_filter_size(size_t filter_len, bool unsub);
/* PUBACK, PUBREC or PUBCOMP with reason Success (v5 omits it: remaining 2). */
size_t mqtt_encode_ack(uint8_t *out, size_t cap, enum mqtt_type type, uint16_t pid);
/* PUBREL with reason Success (v5 omits it: remaining 2). */
size_t mqtt_encode_pubrel(uint8_t *out, size_t cap, uint16_t pid);
/* PUBLISH; 0 for a QoS above 2, a missing pid at QoS 1/2, DUP at QoS 0, a
 * string over 65535 bytes or a remaining length over the maximum. The
 * topic is not checked (see wisp_topic_name_valid). */
size_t mqtt_encode_publish(uint8_t *out, size_t cap, int version, const struct mqtt_pubmsg *m);
size_t mqtt_encode_pingreq(uint8_t *out, size_t cap);
/* v4: no body; v5: the reason code, no properties (Session Expiry kept). */
size_t mqtt_encode_disconnect(uint8_t *out, size_t cap, int version, uint8_t reason);

int mqtt_decode_connack(int version, uint8_t first, const uint8_t *b, size_t n,
                        struct mqtt_connack *out, const char **why);
int mqtt_decode_publish(int version, uint8_t first, const uint8_t *b, size_t n,
                        struct mqtt_publish *out, const char **why);
int mqtt_decode_pubrel(int version, uint8_t first, const uint8_t *b, size_t n, struct mqtt_ack *out,
                       const char **why);
/* PUBACK, PUBREC or PUBCOMP, by the type in first. */
int mqtt_decode_puback(int version, uint8_t first, const uint8_t *b, size_t n, struct mqtt_ack *out,
                       const char **why);
/* SUBACK or UNSUBACK, by the type in first. */
int mqtt_decode_suback(int version, uint8_t first, const uint8_t *b, size_t n, struct mqtt_ack *out,
                       const char **why);
int mqtt_decode_pingresp(uint8_t first, size_t n, const char **why);
int mqtt_decode_disconnect(int version, uint8_t first, const uint8_t *b, size_t n,
                           struct mqtt_disconnect *out, const char **why);

/* "CONNACK", "PUBLISH"... or "reserved" for 0. */
const char *mqtt_type_name(int type);
/* MQTT 5 reason code in words ("Not authorized"), "unknown reason" otherwise. */
const char *mqtt_reason_name(uint8_t code);
/* MQTT 3.1.1 CONNACK return code in words. */
const char *mqtt_connack_v4_name(uint8_t code);

#endif
