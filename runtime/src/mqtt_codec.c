/*
 * MQTT packet encoding and decoding for msess.c; see mqtt_codec.h.
 * Writers count past the end of the buffer without writing, so one
 * function both sizes and encodes a packet; readers fail on the first
 * length that does not fit in what is left of the body.
 */
#include "mqtt_codec.h"

#include <string.h>

#include "topic.h"
#include "util.h"

/* ---- writing ---- */

struct wr {
    uint8_t *p;
    size_t cap, len;
};

static void put_bytes(struct wr *w, const void *src, size_t n)
{
    if (n && w->p && w->len <= w->cap && n <= w->cap - w->len)
        memcpy(w->p + w->len, src, n);
    w->len += n;
}

static void put8(struct wr *w, uint8_t v)
{
    put_bytes(w, &v, 1);
}

static void put16(struct wr *w, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    put_bytes(w, b, 2);
}

static void put32(struct wr *w, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    put_bytes(w, b, 4);
}

static void put_varint(struct wr *w, uint32_t v)
{
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        if (v)
            b |= 0x80;
        put8(w, b);
    } while (v);
}

static void put_str(struct wr *w, const char *s, size_t len)
{
    put16(w, (uint16_t)len);
    put_bytes(w, s, len);
}

size_t mqtt_varint_size(uint32_t v)
{
    if (v < 128u)
        return 1;
    if (v < 16384u)
        return 2;
    if (v < 2097152u)
        return 3;
    return v <= MQTT_MAX_REMAINING ? 4 : 0;
}

/* Starts a packet whose body is `remaining` bytes; false when too long. */
static bool begin(struct wr *w, uint8_t *out, size_t cap, uint8_t first, size_t remaining)
{
    w->p = out;
    w->cap = out ? cap : 0;
    w->len = 0;
    if (remaining > MQTT_MAX_REMAINING)
        return false;
    put8(w, first);
    put_varint(w, (uint32_t)remaining);
    return true;
}

size_t mqtt_encode_connect(uint8_t *out, size_t cap, const struct mqtt_connect *c)
{
    if (c->client_id_len > MQTT_MAX_STRING || c->username_len > MQTT_MAX_STRING ||
        c->password_len > MQTT_MAX_STRING || (c->version != 4 && c->version != 5))
        return 0;
    bool v5 = c->version == 5;
    size_t props = 0;
    if (v5) {
        props += c->session_expiry_s ? 5 : 0;
        props += c->receive_max ? 3 : 0;
        props += c->max_packet ? 5 : 0;
    }
    size_t rem = 2 + 4 + 1 + 1 + 2 + (v5 ? mqtt_varint_size((uint32_t)props) + props : 0) + 2 +
                 c->client_id_len;
    if (c->username)
        rem += 2 + c->username_len;
    if (c->password)
        rem += 2 + c->password_len;
    struct wr w;
    if (!begin(&w, out, cap, MQTT_CONNECT << 4, rem))
        return 0;
    put_str(&w, "MQTT", 4);
    put8(&w, v5 ? 5 : 4);
    uint8_t flags = c->clean ? 0x02 : 0;
    if (c->username)
        flags |= 0x80;
    if (c->password)
        flags |= 0x40;
    put8(&w, flags);
    put16(&w, c->keepalive_s);
    if (v5) {
        put_varint(&w, (uint32_t)props);
        if (c->session_expiry_s) {
            put8(&w, 0x11);
            put32(&w, c->session_expiry_s);
        }
        if (c->receive_max) {
            put8(&w, 0x21);
            put16(&w, c->receive_max);
        }
        if (c->max_packet) {
            put8(&w, 0x27);
            put32(&w, c->max_packet);
        }
    }
    put_str(&w, c->client_id, c->client_id_len);
    if (c->username)
        put_str(&w, c->username, c->username_len);
    if (c->password)
        put_str(&w, c->password, c->password_len);
    return w.len;
}

size_t mqtt_filter_size(size_t filter_len, bool unsub)
{
    return 2 + filter_len + (unsub ? 0 : 1);
}

static size_t encode_sub(uint8_t *out, size_t cap, int version, uint16_t pid,
                         const struct mqtt_filter *f, size_t n, bool unsub)
{
    if (n == 0 || pid == 0)
        return 0;
    size_t rem = 2 + (version == 5 ? 1 : 0);
    for (size_t i = 0; i < n; i++) {
        if (f[i].len > MQTT_MAX_STRING || f[i].qos > 2)
            return 0;
        rem += mqtt_filter_size(f[i].len, unsub);
    }
    struct wr w;
    uint8_t first = (uint8_t)(((unsub ? MQTT_UNSUBSCRIBE : MQTT_SUBSCRIBE) << 4) | 0x02);
    if (!begin(&w, out, cap, first, rem))
        return 0;
    put16(&w, pid);
    if (version == 5)
        put8(&w, 0); /* no properties */
    for (size_t i = 0; i < n; i++) {
        put_str(&w, f[i].filter, f[i].len);
        if (!unsub)
            put8(&w, f[i].qos); /* v5 options: QoS only (no NL/RAP, retain handling 0) */
    }
    return w.len;
}

size_t mqtt_encode_subscribe(uint8_t *out, size_t cap, int version, uint16_t pid,
                             const struct mqtt_filter *f, size_t n)
{
    return encode_sub(out, cap, version, pid, f, n, false);
}

size_t mqtt_encode_unsubscribe(uint8_t *out, size_t cap, int version, uint16_t pid,
                               const struct mqtt_filter *f, size_t n)
{
    return encode_sub(out, cap, version, pid, f, n, true);
}

size_t mqtt_encode_ack(uint8_t *out, size_t cap, enum mqtt_type type, uint16_t pid)
{
    if (type != MQTT_PUBACK && type != MQTT_PUBREC && type != MQTT_PUBCOMP)
        return 0;
    struct wr w;
    (void)begin(&w, out, cap, (uint8_t)(type << 4), 2);
    put16(&w, pid);
    return w.len;
}

size_t mqtt_encode_pubrel(uint8_t *out, size_t cap, uint16_t pid)
{
    struct wr w;
    (void)begin(&w, out, cap, (MQTT_PUBREL << 4) | 0x02, 2);
    put16(&w, pid);
    return w.len;
}

size_t mqtt_encode_publish(uint8_t *out, size_t cap, int version, const struct mqtt_pubmsg *m)
{
    bool user = version == 5 && m->user_key;
    if (m->qos > 2 || (m->qos > 0 && m->pid == 0) || (m->qos == 0 && m->dup) ||
        m->topic_len > MQTT_MAX_STRING || m->payload_len > MQTT_MAX_REMAINING ||
        (user && (m->user_key_len > MQTT_MAX_STRING || m->user_value_len > MQTT_MAX_STRING)))
        return 0;
    size_t props = user ? 1 + 2 + m->user_key_len + 2 + m->user_value_len : 0;
    size_t rem = 2 + m->topic_len + (m->qos ? 2 : 0) + m->payload_len;
    if (version == 5)
        rem += mqtt_varint_size((uint32_t)props) + props;
    uint8_t first = (uint8_t)((MQTT_PUBLISH << 4) | (m->dup ? 0x08 : 0) | (m->qos << 1) |
                              (m->retain ? 0x01 : 0));
    struct wr w;
    if (!begin(&w, out, cap, first, rem))
        return 0;
    put_str(&w, m->topic, m->topic_len);
    if (m->qos)
        put16(&w, m->pid);
    if (version == 5) {
        put_varint(&w, (uint32_t)props);
        if (user) {
            put8(&w, 0x26);
            put_str(&w, m->user_key, m->user_key_len);
            put_str(&w, m->user_value, m->user_value_len);
        }
    }
    put_bytes(&w, m->payload, m->payload_len);
    return w.len;
}

size_t mqtt_encode_pingreq(uint8_t *out, size_t cap)
{
    struct wr w;
    (void)begin(&w, out, cap, MQTT_PINGREQ << 4, 0);
    return w.len;
}

size_t mqtt_encode_disconnect(uint8_t *out, size_t cap, int version, uint8_t reason)
{
    struct wr w;
    (void)begin(&w, out, cap, MQTT_DISCONNECT << 4, version == 5 ? 1 : 0);
    if (version == 5)
        put8(&w, reason);
    return w.len;
}

/* ---- reading ---- */

struct rd {
    const uint8_t *p;
    size_t len, off;
};

static size_t left(const struct rd *r)
{
    return r->len - r->off;
}

static bool get8(struct rd *r, uint8_t *v)
{
    if (left(r) < 1)
        return false;
    *v = r->p[r->off++];
    return true;
}

static bool get16(struct rd *r, uint16_t *v)
{
    if (left(r) < 2)
        return false;
    *v = (uint16_t)((r->p[r->off] << 8) | r->p[r->off + 1]);
    r->off += 2;
    return true;
}

static bool get32(struct rd *r, uint32_t *v)
{
    if (left(r) < 4)
        return false;
    const uint8_t *b = r->p + r->off;
    *v = ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
    r->off += 4;
    return true;
}

static bool get_varint(struct rd *r, uint32_t *v)
{
    uint32_t val = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t b;
        if (!get8(r, &b))
            return false;
        val |= (uint32_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *v = val;
            return true;
        }
    }
    return false;
}

/* Two-byte length then bytes. */
static bool get_bin(struct rd *r, const uint8_t **s, size_t *len)
{
    uint16_t n;
    if (!get16(r, &n) || left(r) < n)
        return false;
    *s = r->p + r->off;
    *len = n;
    r->off += n;
    return true;
}

static int bad(const char **why, const char *reason, int code)
{
    if (why)
        *why = reason;
    return code;
}

#define MALFORMED(why, text) bad((why), (text), MQTT_RC_MALFORMED)
#define PROTOCOL(why, text)  bad((why), (text), MQTT_RC_PROTOCOL_ERROR)

int mqtt_decode_header(const uint8_t *p, size_t len, uint8_t *first, uint32_t *remaining,
                       size_t *header_len)
{
    if (len < 2)
        return 0;
    uint32_t v = 0;
    for (size_t i = 1; i <= 4; i++) {
        if (i >= len)
            return 0;
        v |= (uint32_t)(p[i] & 0x7f) << (7 * (i - 1));
        if (!(p[i] & 0x80)) {
            *first = p[0];
            *remaining = v;
            *header_len = i + 1;
            return 1;
        }
    }
    return -1;
}

enum ptype { P_NONE, P_BYTE, P_TWO, P_FOUR, P_VARINT, P_UTF8, P_BIN, P_PAIR };

static enum ptype prop_type(uint32_t id)
{
    switch (id) {
    case 0x01:
    case 0x17:
    case 0x19:
    case 0x24:
    case 0x25:
    case 0x28:
    case 0x29:
    case 0x2A:
        return P_BYTE;
    case 0x13:
    case 0x21:
    case 0x22:
    case 0x23:
        return P_TWO;
    case 0x02:
    case 0x11:
    case 0x18:
    case 0x27:
        return P_FOUR;
    case 0x0B:
        return P_VARINT;
    case 0x03:
    case 0x08:
    case 0x12:
    case 0x15:
    case 0x1A:
    case 0x1C:
    case 0x1F:
        return P_UTF8;
    case 0x09:
    case 0x16:
        return P_BIN;
    case 0x26:
        return P_PAIR;
    default:
        return P_NONE;
    }
}

/* Reads one UTF-8 string property value. */
static int prop_utf8(struct rd *r, const uint8_t **s, size_t *len, const char **why)
{
    if (!get_bin(r, s, len))
        return MALFORMED(why, "property string runs past the properties");
    if (!wisp_utf8_valid((const char *)*s, *len))
        return MALFORMED(why, "property string is not valid UTF-8");
    return 0;
}

static int prop_value(struct rd *r, uint32_t id, struct mqtt_props *pr, const char **why)
{
    uint8_t b = 0;
    uint16_t two = 0;
    uint32_t four = 0;
    const uint8_t *s = NULL;
    size_t len = 0;
    bool ok = true;
    int rc = 0;
    switch (prop_type(id)) {
    case P_BYTE:
        ok = get8(r, &b);
        break;
    case P_TWO:
        ok = get16(r, &two);
        break;
    case P_FOUR:
        ok = get32(r, &four);
        break;
    case P_VARINT:
        ok = get_varint(r, &four);
        if (ok && four == 0)
            return PROTOCOL(why, "Subscription Identifier 0");
        break;
    case P_UTF8:
        rc = prop_utf8(r, &s, &len, why);
        break;
    case P_BIN:
        ok = get_bin(r, &s, &len);
        break;
    case P_PAIR:
        rc = prop_utf8(r, &s, &len, why);
        if (!rc)
            rc = prop_utf8(r, &s, &len, why);
        return rc;
    case P_NONE:
        return MALFORMED(why, "unknown property identifier");
    }
    if (rc)
        return rc;
    if (!ok)
        return MALFORMED(why, "property value runs past the properties");
    switch (id) {
    case 0x11:
        pr->has_session_expiry = true;
        pr->session_expiry = four;
        break;
    case 0x12:
        pr->has_assigned_id = true;
        pr->assigned_id = s;
        pr->assigned_id_len = len;
        break;
    case 0x13:
        pr->has_server_keepalive = true;
        pr->server_keepalive = two;
        break;
    case 0x1C:
        pr->server_ref = s;
        pr->server_ref_len = len;
        break;
    case 0x1F:
        pr->reason = s;
        pr->reason_len = len;
        break;
    case 0x21:
        if (two == 0)
            return PROTOCOL(why, "Receive Maximum 0");
        pr->has_receive_max = true;
        pr->receive_max = two;
        break;
    case 0x22:
        pr->has_topic_alias_max = true;
        pr->topic_alias_max = two;
        break;
    case 0x23:
        if (two == 0)
            return PROTOCOL(why, "Topic Alias 0");
        pr->has_topic_alias = true;
        pr->topic_alias = two;
        break;
    case 0x24:
        if (b > 1)
            return PROTOCOL(why, "Maximum QoS is not 0 or 1");
        pr->has_max_qos = true;
        pr->max_qos = b;
        break;
    case 0x25:
        if (b > 1)
            return PROTOCOL(why, "Retain Available is not 0 or 1");
        pr->has_retain_available = true;
        pr->retain_available = b;
        break;
    case 0x27:
        if (four == 0)
            return PROTOCOL(why, "Maximum Packet Size 0");
        pr->has_max_packet = true;
        pr->max_packet = four;
        break;
    default:
        break;
    }
    return 0;
}

/* Reads a property length and the properties; every single-valued
 * property at most once. */
static int get_props(struct rd *r, struct mqtt_props *pr, const char **why)
{
    uint32_t plen;
    memset(pr, 0, sizeof(*pr));
    if (!get_varint(r, &plen))
        return MALFORMED(why, "property length is missing or malformed");
    if (plen > left(r))
        return MALFORMED(why, "property length runs past the packet");
    struct rd sub = {r->p + r->off, plen, 0};
    r->off += plen;
    uint64_t seen = 0;
    while (left(&sub) > 0) {
        uint32_t id;
        if (!get_varint(&sub, &id))
            return MALFORMED(why, "property identifier is malformed");
        if (id < 64 && id != 0x26 && id != 0x0B) {
            if (seen & (1ull << id))
                return PROTOCOL(why, "property appears twice");
            seen |= 1ull << id;
        }
        int rc = prop_value(&sub, id, pr, why);
        if (rc)
            return rc;
    }
    return 0;
}

static int check_flags(uint8_t first, uint8_t want, const char **why)
{
    if ((first & 0x0f) != want)
        return MALFORMED(why, "reserved fixed-header flags are set");
    return 0;
}

int mqtt_decode_connack(int version, uint8_t first, const uint8_t *b, size_t n,
                        struct mqtt_connack *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    int rc = check_flags(first, 0, why);
    if (rc)
        return rc;
    struct rd r = {b, n, 0};
    uint8_t ack_flags;
    if (!get8(&r, &ack_flags) || !get8(&r, &out->code))
        return MALFORMED(why, "CONNACK shorter than 2 bytes");
    if (ack_flags & 0xfe)
        return MALFORMED(why, "CONNACK reserved flags are set");
    out->session_present = ack_flags & 1;
    if (version == 5) {
        if (left(&r) > 0) {
            rc = get_props(&r, &out->props, why);
            if (rc)
                return rc;
        }
    }
    if (left(&r) != 0)
        return MALFORMED(why, "CONNACK has trailing bytes");
    if (out->code != 0 && out->session_present)
        return PROTOCOL(why, "CONNACK refuses the connection but claims a session");
    return 0;
}

int mqtt_decode_publish(int version, uint8_t first, const uint8_t *b, size_t n,
                        struct mqtt_publish *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    out->qos = (first >> 1) & 3;
    out->dup = (first & 0x08) != 0;
    out->retain = (first & 0x01) != 0;
    if (out->qos == 3)
        return MALFORMED(why, "PUBLISH with QoS 3");
    if (out->qos == 0 && out->dup)
        return MALFORMED(why, "PUBLISH at QoS 0 with DUP set");
    struct rd r = {b, n, 0};
    if (!get_bin(&r, &out->topic, &out->topic_len))
        return MALFORMED(why, "PUBLISH topic runs past the packet");
    if (out->qos > 0) {
        if (!get16(&r, &out->pid))
            return MALFORMED(why, "PUBLISH packet identifier is missing");
        if (out->pid == 0)
            return MALFORMED(why, "PUBLISH packet identifier 0");
    }
    if (version == 5) {
        int rc = get_props(&r, &out->props, why);
        if (rc)
            return rc;
    }
    if (out->topic_len > 0) {
        if (!wisp_utf8_valid((const char *)out->topic, out->topic_len))
            return MALFORMED(why, "PUBLISH topic is not valid UTF-8 (or contains NUL)");
        if (!wisp_topic_name_valid((const char *)out->topic, out->topic_len, NULL))
            return bad(why, "PUBLISH topic contains wildcards", MQTT_RC_TOPIC_NAME_INVALID);
    } else if (!out->props.has_topic_alias) {
        return PROTOCOL(why, "PUBLISH with an empty topic and no Topic Alias");
    }
    out->payload = b + r.off;
    out->payload_len = left(&r);
    return 0;
}

/* PUBREL, PUBACK, PUBREC and PUBCOMP share one layout: packet id, then
 * (MQTT 5) an optional reason code and properties. */
struct ack_errors {
    const char *is_short, *zero_pid, *trailing;
};

static const struct ack_errors pubrel_errors = {
    "PUBREL shorter than 2 bytes", "PUBREL packet identifier 0", "PUBREL has trailing bytes"};
static const struct ack_errors puback_errors = {"PUBACK/PUBREC/PUBCOMP shorter than 2 bytes",
                                                "PUBACK/PUBREC/PUBCOMP packet identifier 0",
                                                "PUBACK/PUBREC/PUBCOMP has trailing bytes"};

static int decode_ack(int version, uint8_t first, uint8_t flags, const struct ack_errors *e,
                      const uint8_t *b, size_t n, struct mqtt_ack *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    int rc = check_flags(first, flags, why);
    if (rc)
        return rc;
    struct rd r = {b, n, 0};
    if (!get16(&r, &out->pid))
        return MALFORMED(why, e->is_short);
    if (out->pid == 0)
        return MALFORMED(why, e->zero_pid);
    if (version == 5 && left(&r) > 0) {
        (void)get8(&r, &out->code);
        if (left(&r) > 0) {
            rc = get_props(&r, &out->props, why);
            if (rc)
                return rc;
        }
    }
    if (left(&r) != 0)
        return MALFORMED(why, e->trailing);
    return 0;
}

int mqtt_decode_pubrel(int version, uint8_t first, const uint8_t *b, size_t n, struct mqtt_ack *out,
                       const char **why)
{
    return decode_ack(version, first, 0x02, &pubrel_errors, b, n, out, why);
}

int mqtt_decode_puback(int version, uint8_t first, const uint8_t *b, size_t n, struct mqtt_ack *out,
                       const char **why)
{
    int type = first >> 4;
    if (type != MQTT_PUBACK && type != MQTT_PUBREC && type != MQTT_PUBCOMP) {
        memset(out, 0, sizeof(*out));
        return MALFORMED(why, "not a PUBACK, PUBREC or PUBCOMP");
    }
    return decode_ack(version, first, 0, &puback_errors, b, n, out, why);
}

int mqtt_decode_suback(int version, uint8_t first, const uint8_t *b, size_t n, struct mqtt_ack *out,
                       const char **why)
{
    memset(out, 0, sizeof(*out));
    int rc = check_flags(first, 0, why);
    if (rc)
        return rc;
    bool unsub = (first >> 4) == MQTT_UNSUBACK;
    struct rd r = {b, n, 0};
    if (!get16(&r, &out->pid))
        return MALFORMED(why, "SUBACK/UNSUBACK shorter than 2 bytes");
    if (out->pid == 0)
        return MALFORMED(why, "SUBACK/UNSUBACK packet identifier 0");
    if (version == 5) {
        rc = get_props(&r, &out->props, why);
        if (rc)
            return rc;
    } else if (unsub) {
        if (left(&r) != 0)
            return MALFORMED(why, "UNSUBACK has trailing bytes");
        return 0;
    }
    out->codes = b + r.off;
    out->ncodes = left(&r);
    if (out->ncodes == 0)
        return PROTOCOL(why, "SUBACK/UNSUBACK without reason codes");
    if (version != 5)
        for (size_t i = 0; i < out->ncodes; i++)
            if (out->codes[i] > 2 && out->codes[i] != 0x80)
                return MALFORMED(why, "SUBACK return code is not 0, 1, 2 or 0x80");
    return 0;
}

int mqtt_decode_pingresp(uint8_t first, size_t n, const char **why)
{
    int rc = check_flags(first, 0, why);
    if (rc)
        return rc;
    if (n != 0)
        return MALFORMED(why, "PINGRESP has a body");
    return 0;
}

int mqtt_decode_disconnect(int version, uint8_t first, const uint8_t *b, size_t n,
                           struct mqtt_disconnect *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    int rc = check_flags(first, 0, why);
    if (rc)
        return rc;
    if (version != 5)
        return PROTOCOL(why, "DISCONNECT from the broker (MQTT 3.1.1 has none)");
    struct rd r = {b, n, 0};
    if (left(&r) > 0) {
        (void)get8(&r, &out->code);
        if (left(&r) > 0) {
            rc = get_props(&r, &out->props, why);
            if (rc)
                return rc;
        }
    }
    if (left(&r) != 0)
        return MALFORMED(why, "DISCONNECT has trailing bytes");
    return 0;
}

/* ---- names ---- */

const char *mqtt_type_name(int type)
{
    static const char *const names[] = {
        "reserved", "CONNECT",  "CONNACK",    "PUBLISH", "PUBACK",      "PUBREC",
        "PUBREL",   "PUBCOMP",  "SUBSCRIBE",  "SUBACK",  "UNSUBSCRIBE", "UNSUBACK",
        "PINGREQ",  "PINGRESP", "DISCONNECT", "AUTH",
    };
    return type >= 0 && type < 16 ? names[type] : "invalid";
}

const char *mqtt_reason_name(uint8_t code)
{
    switch (code) {
    case 0x00:
        return "Success";
    case 0x01:
        return "Granted QoS 1";
    case 0x02:
        return "Granted QoS 2";
    case 0x04:
        return "Disconnect with Will Message";
    case 0x10:
        return "No matching subscribers";
    case 0x11:
        return "No subscription existed";
    case 0x18:
        return "Continue authentication";
    case 0x19:
        return "Re-authenticate";
    case 0x80:
        return "Unspecified error";
    case 0x81:
        return "Malformed Packet";
    case 0x82:
        return "Protocol Error";
    case 0x83:
        return "Implementation specific error";
    case 0x84:
        return "Unsupported Protocol Version";
    case 0x85:
        return "Client Identifier not valid";
    case 0x86:
        return "Bad User Name or Password";
    case 0x87:
        return "Not authorized";
    case 0x88:
        return "Server unavailable";
    case 0x89:
        return "Server busy";
    case 0x8A:
        return "Banned";
    case 0x8B:
        return "Server shutting down";
    case 0x8C:
        return "Bad authentication method";
    case 0x8D:
        return "Keep Alive timeout";
    case 0x8E:
        return "Session taken over";
    case 0x8F:
        return "Topic Filter invalid";
    case 0x90:
        return "Topic Name invalid";
    case 0x91:
        return "Packet Identifier in use";
    case 0x92:
        return "Packet Identifier not found";
    case 0x93:
        return "Receive Maximum exceeded";
    case 0x94:
        return "Topic Alias invalid";
    case 0x95:
        return "Packet too large";
    case 0x96:
        return "Message rate too high";
    case 0x97:
        return "Quota exceeded";
    case 0x98:
        return "Administrative action";
    case 0x99:
        return "Payload format invalid";
    case 0x9A:
        return "Retain not supported";
    case 0x9B:
        return "QoS not supported";
    case 0x9C:
        return "Use another server";
    case 0x9D:
        return "Server moved";
    case 0x9E:
        return "Shared Subscriptions not supported";
    case 0x9F:
        return "Connection rate exceeded";
    case 0xA0:
        return "Maximum connect time";
    case 0xA1:
        return "Subscription Identifiers not supported";
    case 0xA2:
        return "Wildcard Subscriptions not supported";
    default:
        return "unknown reason";
    }
}

const char *mqtt_connack_v4_name(uint8_t code)
{
    static const char *const names[] = {
        "connection accepted", "unacceptable protocol version", "identifier rejected",
        "server unavailable",  "bad user name or password",     "not authorized",
    };
    return code < WISP_ARRAY_LEN(names) ? names[code] : "unknown return code";
}
