#include "paho.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

/* The sonames come from Paho's CMake package when it provides them. */
#ifdef WISP_PAHO_3A_SONAME_FOUND
#define WISP_PAHO_PLAIN_SONAME WISP_PAHO_3A_SONAME_FOUND
#else
#define WISP_PAHO_PLAIN_SONAME "libpaho-mqtt3a.so.1"
#endif
#ifdef WISP_PAHO_3AS_SONAME_FOUND
#define WISP_PAHO_TLS_SONAME WISP_PAHO_3AS_SONAME_FOUND
#else
#define WISP_PAHO_TLS_SONAME "libpaho-mqtt3as.so.1"
#endif

static struct wisp_paho_api apis[2] = {
    {.soname = WISP_PAHO_PLAIN_SONAME},
    {.soname = WISP_PAHO_TLS_SONAME},
};
static bool loaded[2];

/* dlsym into a typed function pointer; POSIX guarantees the conversion. */
#define RESOLVE(field, symbol)                                                                     \
    do {                                                                                           \
        void *sym_ = dlsym(h, symbol);                                                             \
        if (!sym_) {                                                                               \
            missing = symbol;                                                                      \
            goto fail;                                                                             \
        }                                                                                          \
        memcpy(&a->field, &sym_, sizeof(sym_));                                                    \
    } while (0)

const struct wisp_paho_api *wisp_paho_load(bool tls, char *err, size_t errlen)
{
    struct wisp_paho_api *a = &apis[tls ? 1 : 0];
    const char *missing = NULL;
    if (loaded[tls ? 1 : 0])
        return a;
    void *h = dlopen(a->soname, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *why = dlerror();
        (void)wisp_errf(err, errlen, -ENOENT, "mqtt: cannot load %s (package libpaho-mqtt1.3): %s",
                        a->soname, why ? why : "unknown error");
        return NULL;
    }
    RESOLVE(connect, "MQTTAsync_connect");
    RESOLVE(createWithOptions, "MQTTAsync_createWithOptions");
    RESOLVE(destroy, "MQTTAsync_destroy");
    RESOLVE(disconnect, "MQTTAsync_disconnect");
    RESOLVE(free_, "MQTTAsync_free");
    RESOLVE(freeMessage, "MQTTAsync_freeMessage");
    RESOLVE(global_init, "MQTTAsync_global_init");
    RESOLVE(reconnect, "MQTTAsync_reconnect");
    RESOLVE(sendMessage, "MQTTAsync_sendMessage");
    RESOLVE(setCallbacks, "MQTTAsync_setCallbacks");
    RESOLVE(setConnected, "MQTTAsync_setConnected");
    RESOLVE(setDisconnected, "MQTTAsync_setDisconnected");
    RESOLVE(strerror_, "MQTTAsync_strerror");
    RESOLVE(subscribeMany, "MQTTAsync_subscribeMany");
    RESOLVE(unsubscribe, "MQTTAsync_unsubscribe");
    RESOLVE(unsubscribeMany, "MQTTAsync_unsubscribeMany");
    RESOLVE(properties_add, "MQTTProperties_add");
    RESOLVE(properties_free, "MQTTProperties_free");
    RESOLVE(reasonCode_toString, "MQTTReasonCode_toString");
    /* OpenSSL 3 initialises itself on first use; left to Paho, it would be
     * initialised eagerly (every algorithm and error string) even for a
     * broker reached without TLS. */
    MQTTAsync_init_options io = MQTTAsync_init_options_initializer;
    io.do_openssl_init = 0;
    a->global_init(&io);
    loaded[tls ? 1 : 0] = true;
    return a;
fail:
    (void)wisp_errf(err, errlen, -ENOENT, "mqtt: %s lacks %s (wrong Paho version?)", a->soname,
                    missing);
    (void)dlclose(h);
    return NULL;
}

const struct wisp_paho_api *wisp_paho_any(void)
{
    if (loaded[0])
        return &apis[0];
    return loaded[1] ? &apis[1] : NULL;
}
