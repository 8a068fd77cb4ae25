/*
 * Paho MQTT C, loaded at run time. wispd links neither Paho variant: it
 * loads libpaho-mqtt3a (plain TCP) or, only when a TLS broker is
 * configured, libpaho-mqtt3as, which pulls in OpenSSL. A gateway that
 * never speaks TLS then never maps libssl/libcrypto, whose relocation and
 * symbol tables alone cost about 1 MB of resident memory.
 *
 * mqtt*.c include this header instead of calling Paho directly: each
 * client keeps the table of the variant it was created with (m->api), so
 * plain and TLS clients can live in one process (the tests do that).
 */
#ifndef WISP_PAHO_H
#define WISP_PAHO_H

#include <MQTTAsync.h>
#include <stdbool.h>
#include <stddef.h>

struct wisp_paho_api {
    const char *soname;
    __typeof__(MQTTAsync_connect) *connect;
    __typeof__(MQTTAsync_createWithOptions) *createWithOptions;
    __typeof__(MQTTAsync_destroy) *destroy;
    __typeof__(MQTTAsync_disconnect) *disconnect;
    __typeof__(MQTTAsync_free) *free_;
    __typeof__(MQTTAsync_freeMessage) *freeMessage;
    __typeof__(MQTTAsync_global_init) *global_init;
    __typeof__(MQTTAsync_reconnect) *reconnect;
    __typeof__(MQTTAsync_sendMessage) *sendMessage;
    __typeof__(MQTTAsync_setCallbacks) *setCallbacks;
    __typeof__(MQTTAsync_setConnected) *setConnected;
    __typeof__(MQTTAsync_setDisconnected) *setDisconnected;
    __typeof__(MQTTAsync_strerror) *strerror_;
    __typeof__(MQTTAsync_subscribeMany) *subscribeMany;
    __typeof__(MQTTAsync_unsubscribe) *unsubscribe;
    __typeof__(MQTTAsync_unsubscribeMany) *unsubscribeMany;
    __typeof__(MQTTProperties_add) *properties_add;
    __typeof__(MQTTProperties_free) *properties_free;
    __typeof__(MQTTReasonCode_toString) *reasonCode_toString;
};

/* Loads (once per process and variant) the Paho library for plain TCP or
 * for TLS, resolves every entry point and returns its table, or NULL with
 * the reason in err. Call it before any thread of the caller's exists that
 * could race with it (wispd does, from wisp_mqtt_create). */
const struct wisp_paho_api *wisp_paho_load(bool tls, char *err, size_t errlen);

/* Any loaded table, for stateless helpers (error strings); NULL if none. */
const struct wisp_paho_api *wisp_paho_any(void);

#endif
