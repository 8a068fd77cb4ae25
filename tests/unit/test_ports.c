/* The sensor ports (ports/): IIO, 1-Wire and thermal zones read from fake
 * sysfs trees, the simulated sensors, and configured-sensor settings. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "port.h"
#include "sim/sim.h"
#include "testutil.h"
#include "util.h"

static char err[1024];
static char root[256];
static struct wisp_port_env env;

#define CHECK_NEAR(a, b)                                                                           \
    do {                                                                                           \
        double na_ = (a), nb_ = (b);                                                               \
        if (!(fabs(na_ - nb_) <= 1e-9 * (1.0 + fabs(nb_)))) {                                      \
            (void)fprintf(stderr, "%s:%d: CHECK_NEAR failed: %s == %.12g, expected %.12g\n",       \
                          __FILE__, __LINE__, #a, na_, nb_);                                       \
            wisp_check_failures++;                                                                 \
        }                                                                                          \
    } while (0)

static bool setup(const char *tag)
{
    if (!wisp_test_mkdtemp(root, sizeof(root), tag))
        return false;
    env.sysfs_root = root;
    env.dev_root = NULL;
    return true;
}

/* Makes each missing directory of rel (a/b/c) below root. */
static void mkdirs(const char *rel)
{
    char path[1024];
    for (const char *p = rel;; p++) {
        p = strchr(p, '/');
        (void)snprintf(path, sizeof(path), "%s/%.*s", root, p ? (int)(p - rel) : (int)strlen(rel),
                       rel);
        CHECK(mkdir(path, 0755) == 0 || errno == EEXIST);
        if (!p)
            break;
    }
}

/* Opens a sensor from JSON text; returns the result, err says why. */
static int open_text(const char *json, const char *name, struct wisp_sensor **s)
{
    cJSON *obj = cJSON_Parse(json);
    CHECK(obj != NULL);
    err[0] = '\0';
    *s = NULL;
    int rc = wisp_sensor_open(obj, name, &env, s, err, sizeof(err));
    cJSON_Delete(obj);
    if (rc == 0)
        CHECK(*s != NULL);
    else
        CHECK(*s == NULL);
    return rc;
}

/* Opens, reads once and closes; the reading into r (its unit copied, as a
 * configured unit lives only as long as the sensor). */
static int read_once(const char *json, struct wisp_reading *r)
{
    static char unit[64];
    struct wisp_sensor *s = NULL;
    int rc = open_text(json, "t", &s);
    if (rc)
        return rc;
    err[0] = '\0';
    rc = wisp_sensor_read(s, r, err, sizeof(err));
    if (rc == 0) {
        (void)snprintf(unit, sizeof(unit), "%s", r->unit);
        r->unit = unit;
    }
    wisp_sensor_close(s);
    return rc;
}

/* Opens expecting success, reads once expecting an error; returns it. */
static int read_fails(const char *json)
{
    struct wisp_reading r;
    struct wisp_sensor *s = NULL;
    CHECK_INT_EQ(open_text(json, "t", &s), 0);
    if (!s)
        return 0;
    err[0] = '\0';
    int rc = wisp_sensor_read(s, &r, err, sizeof(err));
    CHECK(rc < 0);
    wisp_sensor_close(s);
    return rc;
}

static void test_registry(void)
{
    CHECK_STR_EQ(wisp_sensor_port_find("iio")->name, "iio");
    CHECK_STR_EQ(wisp_sensor_port_find("w1")->name, "w1");
    CHECK_STR_EQ(wisp_sensor_port_find("thermal")->name, "thermal");
    CHECK_STR_EQ(wisp_sensor_port_find("sim")->name, "sim");
    CHECK(wisp_sensor_port_find("gpio") == NULL);
    CHECK(wisp_sensor_port_find(NULL) == NULL);
    char names[128];
    wisp_sensor_port_names(names, sizeof(names));
    CHECK_STR_EQ(names, "iio, w1, thermal, sim, file");
    CHECK_STR_EQ(wisp_sensor_port_find("file")->name, "file");
}

static void test_iio(void)
{
    if (!setup("iio"))
        return;
    const char *dev = "bus/iio/devices/iio:device0";
    mkdirs(dev);
    /* Temperature with its own scale and offset: (raw + offset) * scale milli °C. */
    wisp_test_write(root, "bus/iio/devices/iio:device0/in_temp_raw", "1000\n");
    wisp_test_write(root, "bus/iio/devices/iio:device0/in_temp_offset", "-200\n");
    wisp_test_write(root, "bus/iio/devices/iio:device0/in_temp_scale", "25.5\n");
    struct wisp_reading r = {0};
    CHECK_INT_EQ(
        read_once("{\"port\":\"iio\",\"device\":\"iio:device0\",\"channel\":\"in_temp\"}", &r), 0);
    CHECK_NEAR(r.value, 20.4); /* 800 * 25.5 / 1000 */
    CHECK_STR_EQ(r.unit, "°C");
    CHECK(r.time_ns > 1600000000ULL * 1000000000ULL);

    /* in_voltage0 falls back to the type-wide in_voltage_scale; no offset. */
    wisp_test_write(root, "bus/iio/devices/iio:device0/in_voltage0_raw", "2048\n");
    wisp_test_write(root, "bus/iio/devices/iio:device0/in_voltage_scale", "0.805664062\n");
    CHECK_INT_EQ(read_once("{\"port\":\"iio\",\"device\":\"iio:device0\","
                           "\"channel\":\"in_voltage0\"}",
                           &r),
                 0);
    CHECK_NEAR(r.value, 2048 * 0.805664062);
    CHECK_STR_EQ(r.unit, "mV");
    /* The channel's own scale wins over the type-wide one. */
    wisp_test_write(root, "bus/iio/devices/iio:device0/in_voltage0_scale", "2\n");
    CHECK_INT_EQ(read_once("{\"port\":\"iio\",\"device\":\"iio:device0\","
                           "\"channel\":\"in_voltage0\"}",
                           &r),
                 0);
    CHECK_NEAR(r.value, 4096.0);

    /* Humidity in milli percent, no scale: raw / 1000; pressure in kPa. */
    wisp_test_write(root, "bus/iio/devices/iio:device0/in_humidityrelative_raw", "45500");
    CHECK_INT_EQ(read_once("{\"port\":\"iio\",\"device\":\"iio:device0\","
                           "\"channel\":\"in_humidityrelative\"}",
                           &r),
                 0);
    CHECK_NEAR(r.value, 45.5);
    CHECK_STR_EQ(r.unit, "%RH");
    wisp_test_write(root, "bus/iio/devices/iio:device0/in_pressure_raw", "-5\n");
    wisp_test_write(root, "bus/iio/devices/iio:device0/in_pressure_scale", "1.5e1\n");
    CHECK_INT_EQ(read_once("{\"port\":\"iio\",\"device\":\"iio:device0\","
                           "\"channel\":\"in_pressure\"}",
                           &r),
                 0);
    CHECK_NEAR(r.value, -75.0);
    CHECK_STR_EQ(r.unit, "kPa");

    /* Unknown type: no unit unless configured; the sensor's scale/offset apply after. */
    wisp_test_write(root, "bus/iio/devices/iio:device0/in_illuminance0_raw", "10\n");
    CHECK_INT_EQ(read_once("{\"port\":\"iio\",\"device\":\"iio:device0\","
                           "\"channel\":\"in_illuminance0\"}",
                           &r),
                 0);
    CHECK_NEAR(r.value, 10.0);
    CHECK_STR_EQ(r.unit, "");
    CHECK_INT_EQ(read_once("{\"port\":\"iio\",\"device\":\"iio:device0\","
                           "\"channel\":\"in_illuminance0\",\"unit\":\"lx\",\"scale\":0.5,"
                           "\"offset\":1}",
                           &r),
                 0);
    CHECK_NEAR(r.value, 6.0);
    CHECK_STR_EQ(r.unit, "lx");

    char expect[1024];
    /* Missing _raw. */
    CHECK_INT_EQ(read_fails("{\"port\":\"iio\",\"device\":\"iio:device0\","
                            "\"channel\":\"in_current0\"}"),
                 -ENOENT);
    (void)snprintf(expect, sizeof(expect),
                   "t: %s/bus/iio/devices/iio:device0/in_current0_raw: No such file or directory",
                   root);
    CHECK_STR_EQ(err, expect);
    /* Missing device. */
    CHECK_INT_EQ(read_fails("{\"port\":\"iio\",\"device\":\"iio:device9\","
                            "\"channel\":\"in_temp\"}"),
                 -ENOENT);
    /* Garbage raw. */
    wisp_test_write(root, "bus/iio/devices/iio:device0/in_voltage1_raw", "12abc\n");
    CHECK_INT_EQ(read_fails("{\"port\":\"iio\",\"device\":\"iio:device0\","
                            "\"channel\":\"in_voltage1\"}"),
                 -EINVAL);
    (void)snprintf(expect, sizeof(expect),
                   "t: %s/bus/iio/devices/iio:device0/in_voltage1_raw: not an integer: \"12abc\"",
                   root);
    CHECK_STR_EQ(err, expect);
    wisp_test_write(root, "bus/iio/devices/iio:device0/in_voltage1_raw", "");
    CHECK_INT_EQ(read_fails("{\"port\":\"iio\",\"device\":\"iio:device0\","
                            "\"channel\":\"in_voltage1\"}"),
                 -EINVAL);
    wisp_test_write(root, "bus/iio/devices/iio:device0/in_voltage1_raw", " 12\n");
    CHECK_INT_EQ(read_fails("{\"port\":\"iio\",\"device\":\"iio:device0\","
                            "\"channel\":\"in_voltage1\"}"),
                 -EINVAL);
    /* Garbage scale. */
    wisp_test_write(root, "bus/iio/devices/iio:device0/in_voltage1_raw", "12\n");
    wisp_test_write(root, "bus/iio/devices/iio:device0/in_voltage1_scale", "nan\n");
    CHECK_INT_EQ(read_fails("{\"port\":\"iio\",\"device\":\"iio:device0\","
                            "\"channel\":\"in_voltage1\"}"),
                 -EINVAL);
    CHECK_CONTAINS(err, "in_voltage1_scale: not a number: \"nan\"");
    /* A huge file is refused without reading it all. */
    char *huge = wisp_test_repeat("", "1", 1000000, "\n");
    if (huge) {
        wisp_test_write(root, "bus/iio/devices/iio:device0/in_voltage2_raw", huge);
        free(huge);
    }
    CHECK_INT_EQ(read_fails("{\"port\":\"iio\",\"device\":\"iio:device0\","
                            "\"channel\":\"in_voltage2\"}"),
                 -EFBIG);
    CHECK_CONTAINS(err, "in_voltage2_raw: file too large (more than 511 bytes)");
    /* A directory where the attribute should be. */
    mkdirs("bus/iio/devices/iio:device0/in_voltage3_raw");
    CHECK_INT_EQ(read_fails("{\"port\":\"iio\",\"device\":\"iio:device0\","
                            "\"channel\":\"in_voltage3\"}"),
                 -EINVAL);
    CHECK_CONTAINS(err, "in_voltage3_raw: not a regular file");
    wisp_test_rmtree(root);
}

static void test_iio_config(void)
{
    env.sysfs_root = "/nonexistent";
    struct wisp_sensor *s = NULL;
    CHECK_INT_EQ(open_text("{\"port\":\"iio\",\"channel\":\"in_temp\"}", "t", &s), -EINVAL);
    CHECK_STR_EQ(err, "t.device: required");
    CHECK_INT_EQ(
        open_text("{\"port\":\"iio\",\"device\":\"../x\",\"channel\":\"in_temp\"}", "t", &s),
        -EINVAL);
    CHECK_STR_EQ(err, "t.device: \"../x\" is not a file name");
    CHECK_INT_EQ(
        open_text("{\"port\":\"iio\",\"device\":\"iio:device0\",\"channel\":\"temp\"}", "t", &s),
        -EINVAL);
    CHECK_STR_EQ(err, "t.channel: \"temp\" is not an IIO channel (like \"in_voltage0\")");
    CHECK_INT_EQ(open_text("{\"port\":\"iio\",\"device\":\"iio:device0\","
                           "\"channel\":\"in_temp/../x\"}",
                           "t", &s),
                 -EINVAL);
    CHECK_INT_EQ(open_text("{\"port\":\"iio\",\"device\":\"iio:device0\","
                           "\"channel\":\"in_temp_raw\"}",
                           "t", &s),
                 -EINVAL);
    CHECK_STR_EQ(err, "t.channel: name the channel without \"_raw\" (\"in_temp\")");
    CHECK_INT_EQ(open_text("{\"port\":\"iio\",\"device\":\"iio:device0\",\"channel\":7}", "t", &s),
                 -EINVAL);
    CHECK_STR_EQ(err, "t.channel: must be a string");
    CHECK_INT_EQ(open_text("{\"port\":\"iio\",\"device\":\"iio:device0\",\"channel\":\"in_temp\","
                           "\"chanel\":\"x\"}",
                           "t", &s),
                 -EINVAL);
    CHECK_STR_EQ(err,
                 "t.chanel: unknown key (allowed: port, unit, scale, offset, device, channel)");
    /* Opening does no I/O: a missing device shows up when read. */
    CHECK_INT_EQ(
        open_text("{\"port\":\"iio\",\"device\":\"iio:device0\",\"channel\":\"in_temp\"}", "t", &s),
        0);
    wisp_sensor_close(s);
}

static const char w1_good[] = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n"
                              "72 01 4b 46 7f ff 0e 10 57 t=23125\n";

static void test_w1(void)
{
    if (!setup("w1"))
        return;
    mkdirs("bus/w1/devices/28-000005e2fdc3");
    const char *cfg = "{\"port\":\"w1\",\"id\":\"28-000005e2fdc3\"}";
    const char *file = "bus/w1/devices/28-000005e2fdc3/w1_slave";
    char expect[1024];
    struct wisp_reading r = {0};

    /* Missing file. */
    CHECK_INT_EQ(read_fails(cfg), -ENOENT);
    (void)snprintf(expect, sizeof(expect), "t: %s/%s: No such file or directory", root, file);
    CHECK_STR_EQ(err, expect);

    wisp_test_write(root, file, w1_good);
    CHECK_INT_EQ(read_once(cfg, &r), 0);
    CHECK_NEAR(r.value, 23.125);
    CHECK_STR_EQ(r.unit, "°C");
    CHECK(r.time_ns > 0);
    /* Below zero. */
    wisp_test_write(root, file,
                    "5e ff 4b 46 7f ff 0c 10 1c : crc=1c YES\n"
                    "5e ff 4b 46 7f ff 0c 10 1c t=-10125\n");
    CHECK_INT_EQ(read_once(cfg, &r), 0);
    CHECK_NEAR(r.value, -10.125);

    wisp_test_write(root, file,
                    "72 01 4b 46 7f ff 0e 10 57 : crc=58 NO\n"
                    "72 01 4b 46 7f ff 0e 10 57 t=23125\n");
    CHECK_INT_EQ(read_fails(cfg), -EIO);
    (void)snprintf(expect, sizeof(expect), "t: %s/%s: CRC check failed", root, file);
    CHECK_STR_EQ(err, expect);

    /* Truncated: one line, or no t= on the second. */
    wisp_test_write(root, file, "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES");
    CHECK_INT_EQ(read_fails(cfg), -EIO);
    CHECK_CONTAINS(err, "w1_slave: truncated (one line, expected two)");
    wisp_test_write(root, file, "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46");
    CHECK_INT_EQ(read_fails(cfg), -EIO);
    CHECK_CONTAINS(err, "w1_slave: truncated (no \"t=\" on the second line)");
    wisp_test_write(root, file, "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 t=");
    CHECK_INT_EQ(read_fails(cfg), -EINVAL);
    CHECK_CONTAINS(err, "w1_slave: bad temperature \"\"");
    wisp_test_write(root, file, "");
    CHECK_INT_EQ(read_fails(cfg), -EIO);

    /* Garbage. */
    wisp_test_write(root, file, "hello\nworld\n");
    CHECK_INT_EQ(read_fails(cfg), -EINVAL);
    CHECK_CONTAINS(err, "w1_slave: malformed (no \"crc=\" on the first line)");
    wisp_test_write(root, file, "72 01 : crc=57 MAYBE\nt=1\n");
    CHECK_INT_EQ(read_fails(cfg), -EINVAL);
    CHECK_CONTAINS(err, "w1_slave: malformed (first line ends in neither YES nor NO)");
    wisp_test_write(root, file, "72 01 : crc=57 YES\n72 01 t=23x125\n");
    CHECK_INT_EQ(read_fails(cfg), -EINVAL);
    CHECK_CONTAINS(err, "w1_slave: bad temperature \"23x125\"");
    char *huge = wisp_test_repeat("72 01 : crc=57 YES\nt=", "9", 5000, "\n");
    if (huge) {
        wisp_test_write(root, file, huge);
        free(huge);
    }
    CHECK_INT_EQ(read_fails(cfg), -EFBIG);

    /* The newer temperature file wins when present. */
    wisp_test_write(root, file, w1_good);
    wisp_test_write(root, "bus/w1/devices/28-000005e2fdc3/temperature", "21500\n");
    CHECK_INT_EQ(read_once(cfg, &r), 0);
    CHECK_NEAR(r.value, 21.5);
    CHECK_STR_EQ(r.unit, "°C");
    wisp_test_write(root, "bus/w1/devices/28-000005e2fdc3/temperature", "oops\n");
    CHECK_INT_EQ(read_fails(cfg), -EINVAL);
    CHECK_CONTAINS(err, "temperature: not an integer: \"oops\"");

    /* Config. */
    struct wisp_sensor *s = NULL;
    CHECK_INT_EQ(open_text("{\"port\":\"w1\"}", "t", &s), -EINVAL);
    CHECK_STR_EQ(err, "t.id: required");
    CHECK_INT_EQ(open_text("{\"port\":\"w1\",\"id\":\"\"}", "t", &s), -EINVAL);
    CHECK_STR_EQ(err, "t.id: \"\" is not a file name");
    CHECK_INT_EQ(open_text("{\"port\":\"w1\",\"id\":\"28-1\",\"zone\":\"x\"}", "t", &s), -EINVAL);
    CHECK_STR_EQ(err, "t.zone: unknown key (allowed: port, unit, scale, offset, id)");
    wisp_test_rmtree(root);
}

static void test_thermal(void)
{
    if (!setup("thermal"))
        return;
    mkdirs("class/thermal/thermal_zone0");
    const char *cfg = "{\"port\":\"thermal\",\"zone\":\"thermal_zone0\"}";
    const char *file = "class/thermal/thermal_zone0/temp";
    struct wisp_reading r = {0};
    char expect[1024];

    CHECK_INT_EQ(read_fails(cfg), -ENOENT);
    (void)snprintf(expect, sizeof(expect), "t: %s/%s: No such file or directory", root, file);
    CHECK_STR_EQ(err, expect);

    wisp_test_write(root, file, "48312\n");
    CHECK_INT_EQ(read_once(cfg, &r), 0);
    CHECK_NEAR(r.value, 48.312);
    CHECK_STR_EQ(r.unit, "°C");
    /* The configured offset and unit apply after the port's conversion. */
    CHECK_INT_EQ(read_once("{\"port\":\"thermal\",\"zone\":\"thermal_zone0\",\"scale\":1.8,"
                           "\"offset\":32,\"unit\":\"°F\"}",
                           &r),
                 0);
    CHECK_NEAR(r.value, 48.312 * 1.8 + 32.0);
    CHECK_STR_EQ(r.unit, "°F");

    wisp_test_write(root, file, "48.3\n");
    CHECK_INT_EQ(read_fails(cfg), -EINVAL);
    (void)snprintf(expect, sizeof(expect), "t: %s/%s: not an integer: \"48.3\"", root, file);
    CHECK_STR_EQ(err, expect);
    wisp_test_write(root, file, "99999999999999999999999\n");
    CHECK_INT_EQ(read_fails(cfg), -EINVAL);
    wisp_test_write(root, file, "\n");
    CHECK_INT_EQ(read_fails(cfg), -EINVAL);
    /* A FIFO where the attribute should be: refused, not waited on. */
    char fifo[1024];
    wisp_test_path(fifo, sizeof(fifo), root, file);
    CHECK_INT_EQ(unlink(fifo), 0);
    CHECK_INT_EQ(mkfifo(fifo, 0644), 0);
    CHECK_INT_EQ(read_fails(cfg), -EINVAL);
    CHECK_CONTAINS(err, "temp: not a regular file");

    struct wisp_sensor *s = NULL;
    CHECK_INT_EQ(open_text("{\"port\":\"thermal\",\"zone\":5}", "cpu", &s), -EINVAL);
    CHECK_STR_EQ(err, "cpu.zone: must be a string");
    CHECK_INT_EQ(open_text("{\"port\":\"thermal\",\"zone\":\"..\"}", "cpu", &s), -EINVAL);
    CHECK_STR_EQ(err, "cpu.zone: \"..\" is not a file name");
    wisp_test_rmtree(root);
}

static void test_sim_constant(void)
{
    struct wisp_reading r = {0};
    CHECK_INT_EQ(read_once("{\"port\":\"sim\",\"mode\":\"constant\",\"value\":21.5}", &r), 0);
    CHECK_NEAR(r.value, 21.5);
    CHECK_STR_EQ(r.unit, "");
    CHECK_INT_EQ(read_once("{\"port\":\"sim\",\"mode\":\"constant\",\"value\":2,\"unit\":\"bar\","
                           "\"scale\":10,\"offset\":-1}",
                           &r),
                 0);
    CHECK_NEAR(r.value, 19.0);
    CHECK_STR_EQ(r.unit, "bar");

    struct wisp_sensor *s = NULL;
    CHECK_INT_EQ(open_text("{\"port\":\"sim\",\"mode\":\"constant\"}", "c", &s), -EINVAL);
    CHECK_STR_EQ(err, "c.value: required");
    CHECK_INT_EQ(open_text("{\"port\":\"sim\",\"mode\":\"constant\",\"value\":\"1\"}", "c", &s),
                 -EINVAL);
    CHECK_STR_EQ(err, "c.value: must be a number");
    /* A key of another mode is unknown here. */
    CHECK_INT_EQ(
        open_text("{\"port\":\"sim\",\"mode\":\"constant\",\"value\":1,\"min\":0}", "c", &s),
        -EINVAL);
    CHECK_STR_EQ(err,
                 "c.min: unknown key (allowed: port, unit, scale, offset, mode, read_ms, value)");
    CHECK_INT_EQ(open_text("{\"port\":\"sim\"}", "c", &s), -EINVAL);
    CHECK_STR_EQ(err, "c.mode: required");
    CHECK_INT_EQ(open_text("{\"port\":\"sim\",\"mode\":\"square\"}", "c", &s), -EINVAL);
    CHECK_STR_EQ(err, "c.mode: unknown mode \"square\" (known: constant, sine, random_walk, csv)");
    /* read_ms: each read blocks that long (a slow bus), within bounds. */
    CHECK_INT_EQ(
        open_text("{\"port\":\"sim\",\"mode\":\"constant\",\"value\":1,\"read_ms\":-1}", "c", &s),
        -EINVAL);
    CHECK_STR_EQ(err, "c.read_ms: must be 0 to 10000");
    uint64_t t0 = wisp_mono_ns();
    CHECK_INT_EQ(
        read_once("{\"port\":\"sim\",\"mode\":\"constant\",\"value\":3,\"read_ms\":30}", &r), 0);
    CHECK(wisp_mono_ns() - t0 >= 30000000ULL);
    CHECK_NEAR(r.value, 3.0);
}

static uint64_t fake_now;

static uint64_t fake_clock(void)
{
    return fake_now;
}

static void test_sim_sine(void)
{
    wisp_sim_test_set_clock(fake_clock);
    struct wisp_sensor *s = NULL;
    CHECK_INT_EQ(open_text("{\"port\":\"sim\",\"mode\":\"sine\",\"min\":10,\"max\":20,"
                           "\"period_s\":60}",
                           "w", &s),
                 0);
    wisp_sim_test_set_clock(NULL);
    if (!s)
        return;
    const uint64_t base = 1700000040ULL * 1000000000ULL; /* a multiple of 60 s */
    const struct {
        uint64_t at_ms;
        double value;
    } cases[] = {
        {0, 15.0}, {15000, 20.0}, {30000, 15.0}, {45000, 10.0}, {60000, 15.0}, {5000, 17.5},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fake_now = base + cases[i].at_ms * 1000000ULL;
        struct wisp_reading r = {0};
        CHECK_INT_EQ(wisp_sensor_read(s, &r, err, sizeof(err)), 0);
        if (fabs(r.value - cases[i].value) > 1e-6) {
            (void)fprintf(stderr, "sine at %llu ms: %.9f, expected %.9f\n",
                          (unsigned long long)cases[i].at_ms, r.value, cases[i].value);
            CHECK(!"sine value");
        }
        CHECK(r.time_ns == fake_now);
    }
    wisp_sensor_close(s);

    CHECK_INT_EQ(open_text("{\"port\":\"sim\",\"mode\":\"sine\",\"min\":10,\"max\":20}", "w", &s),
                 -EINVAL);
    CHECK_STR_EQ(err, "w.period_s: required");
    CHECK_INT_EQ(open_text("{\"port\":\"sim\",\"mode\":\"sine\",\"min\":10,\"max\":20,"
                           "\"period_s\":0}",
                           "w", &s),
                 -EINVAL);
    CHECK_STR_EQ(err, "w.period_s: must be in [0.001, 1e9]");
    CHECK_INT_EQ(open_text("{\"port\":\"sim\",\"mode\":\"sine\",\"min\":30,\"max\":20,"
                           "\"period_s\":1}",
                           "w", &s),
                 -EINVAL);
    CHECK_STR_EQ(err, "w.max: must be at least min");
}

static void walk(const char *json, double *out, size_t n)
{
    struct wisp_sensor *s = NULL;
    CHECK_INT_EQ(open_text(json, "rw", &s), 0);
    if (!s)
        return;
    for (size_t i = 0; i < n; i++) {
        struct wisp_reading r = {0};
        CHECK_INT_EQ(wisp_sensor_read(s, &r, err, sizeof(err)), 0);
        out[i] = r.value;
    }
    wisp_sensor_close(s);
}

static void test_sim_random_walk(void)
{
    enum { N = 2000 };
    static double a[N], b[N], c[N];
    const char *cfg = "{\"port\":\"sim\",\"mode\":\"random_walk\",\"start\":20,\"step\":0.5,"
                      "\"min\":18,\"max\":22,\"seed\":42}";
    walk(cfg, a, N);
    walk(cfg, b, N);
    walk("{\"port\":\"sim\",\"mode\":\"random_walk\",\"start\":20,\"step\":0.5,"
         "\"min\":18,\"max\":22,\"seed\":43}",
         c, N);
    size_t same_ab = 0, same_ac = 0;
    for (size_t i = 0; i < N; i++) {
        same_ab += a[i] == b[i];
        same_ac += a[i] == c[i];
    }
    CHECK(same_ab == N);
    CHECK(same_ac < N);
    CHECK_NEAR(a[0], 20.0);
    bool moved = false, hit_min = false, hit_max = false;
    for (size_t i = 0; i < N; i++) {
        CHECK(a[i] >= 18.0 && a[i] <= 22.0);
        if (i) {
            CHECK(fabs(a[i] - a[i - 1]) <= 0.5);
            moved |= a[i] != a[i - 1];
        }
        hit_min |= a[i] == 18.0;
        hit_max |= a[i] == 22.0;
    }
    CHECK(moved);
    CHECK(hit_min || hit_max); /* 2000 steps of up to 0.5 in a band of 4 */

    struct wisp_sensor *s = NULL;
    CHECK_INT_EQ(open_text("{\"port\":\"sim\",\"mode\":\"random_walk\",\"start\":30,\"step\":0.5,"
                           "\"min\":18,\"max\":22}",
                           "rw", &s),
                 -EINVAL);
    CHECK_STR_EQ(err, "rw.start: must be within [min, max]");
    CHECK_INT_EQ(open_text("{\"port\":\"sim\",\"mode\":\"random_walk\",\"start\":20,\"step\":0.5,"
                           "\"min\":18,\"max\":22,\"seed\":1.5}",
                           "rw", &s),
                 -EINVAL);
    CHECK_STR_EQ(err, "rw.seed: must be an integer in [0, 9007199254740992]");
    CHECK_INT_EQ(open_text("{\"port\":\"sim\",\"mode\":\"random_walk\",\"start\":20,\"step\":-1,"
                           "\"min\":18,\"max\":22}",
                           "rw", &s),
                 -EINVAL);
    CHECK_STR_EQ(err, "rw.step: must not be negative");
    CHECK_INT_EQ(open_text("{\"port\":\"sim\",\"mode\":\"random_walk\",\"start\":20,"
                           "\"min\":18,\"max\":22}",
                           "rw", &s),
                 -EINVAL);
    CHECK_STR_EQ(err, "rw.step: required");
    /* Without a seed it still opens and stays in bounds. */
    walk("{\"port\":\"sim\",\"mode\":\"random_walk\",\"start\":0,\"step\":1,\"min\":-1,\"max\":1}",
         c, 100);
    for (size_t i = 0; i < 100; i++)
        CHECK(c[i] >= -1.0 && c[i] <= 1.0);
}

static void test_sim_csv(void)
{
    if (!setup("csv"))
        return;
    char path[512], json[1024], expect[1024];
    wisp_test_write(root, "trace.csv",
                    "time,value\n0,1.5\n# a comment\n\n1, 2.5\r\n2.5,-3\n2.5 , 4e1\n");
    wisp_test_path(path, sizeof(path), root, "trace.csv");
    (void)snprintf(json, sizeof(json), "{\"port\":\"sim\",\"mode\":\"csv\",\"file\":\"%s\"}", path);
    struct wisp_sensor *s = NULL;
    CHECK_INT_EQ(open_text(json, "csv", &s), 0);
    if (s) {
        const double want[] = {1.5, 2.5, -3.0, 40.0, 1.5, 2.5, -3.0, 40.0, 1.5};
        for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
            struct wisp_reading r = {0};
            CHECK_INT_EQ(wisp_sensor_read(s, &r, err, sizeof(err)), 0);
            CHECK_NEAR(r.value, want[i]);
        }
        wisp_sensor_close(s);
    }

    const struct {
        const char *text, *what;
    } bad[] = {
        {"time,value\n0,1\n1,x\n", "3: bad value \"x\""},
        {"0,1\n1\n", "2: expected \"time,value\""},
        {"0,1,2\n", "1: expected \"time,value\""},
        {"0,1\nabc,2\n", "2: bad time \"abc\""},
        {"0,1\n2,1\n1,1\n", "3: time goes backwards"},
        {"0,1\n1,0x10\n", "2: bad value \"0x10\""},
        {"0,1\n1,inf\n", "2: bad value \"inf\""},
        {"0,1\n1,\n", "2: bad value \"\""},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        wisp_test_write(root, "bad.csv", bad[i].text);
        wisp_test_path(path, sizeof(path), root, "bad.csv");
        (void)snprintf(json, sizeof(json), "{\"port\":\"sim\",\"mode\":\"csv\",\"file\":\"%s\"}",
                       path);
        CHECK_INT_EQ(open_text(json, "csv", &s), -EINVAL);
        (void)snprintf(expect, sizeof(expect), "csv.file: %s:%s", path, bad[i].what);
        CHECK_STR_EQ(err, expect);
    }
    wisp_test_write(root, "empty.csv", "time,value\n\n");
    wisp_test_path(path, sizeof(path), root, "empty.csv");
    (void)snprintf(json, sizeof(json), "{\"port\":\"sim\",\"mode\":\"csv\",\"file\":\"%s\"}", path);
    CHECK_INT_EQ(open_text(json, "csv", &s), -EINVAL);
    (void)snprintf(expect, sizeof(expect), "csv.file: %s: no rows", path);
    CHECK_STR_EQ(err, expect);
    wisp_test_path(path, sizeof(path), root, "missing.csv");
    (void)snprintf(json, sizeof(json), "{\"port\":\"sim\",\"mode\":\"csv\",\"file\":\"%s\"}", path);
    CHECK_INT_EQ(open_text(json, "csv", &s), -ENOENT);
    (void)snprintf(expect, sizeof(expect), "csv.file: %s: No such file or directory", path);
    CHECK_STR_EQ(err, expect);
    wisp_test_rmtree(root);
}

/* The generic one-number file: relative paths under the sysfs root. */
static void test_file(void)
{
    if (!setup("file"))
        return;
    mkdirs("class/hwmon/hwmon0");
    const char *cfg = "{\"port\":\"file\",\"path\":\"class/hwmon/hwmon0/temp1_input\","
                      "\"scale\":0.001,\"unit\":\"°C\"}";
    struct wisp_reading r = {0};
    char expect[1024];
    CHECK_INT_EQ(read_fails(cfg), -ENOENT);
    (void)snprintf(expect, sizeof(expect),
                   "t: %s/class/hwmon/hwmon0/temp1_input: No such file or directory", root);
    CHECK_STR_EQ(err, expect);
    wisp_test_write(root, "class/hwmon/hwmon0/temp1_input", "51250\n");
    CHECK_INT_EQ(read_once(cfg, &r), 0);
    CHECK_NEAR(r.value, 51.25);
    CHECK_STR_EQ(r.unit, "°C");
    wisp_test_write(root, "class/hwmon/hwmon0/temp1_input", "warm\n");
    CHECK_INT_EQ(read_fails(cfg), -EINVAL);
    CHECK_CONTAINS(err, "temp1_input: not a number: \"warm\"");
    /* An absolute path is read as it is. */
    char abs_cfg[1200];
    (void)snprintf(abs_cfg, sizeof(abs_cfg), "{\"port\":\"file\",\"path\":\"%s/x\"}", root);
    wisp_test_write(root, "x", "-3.5\n");
    CHECK_INT_EQ(read_once(abs_cfg, &r), 0);
    CHECK_NEAR(r.value, -3.5);
    CHECK_STR_EQ(r.unit, "");
    struct wisp_sensor *s = NULL;
    CHECK_INT_EQ(open_text("{\"port\":\"file\",\"path\":\"../etc/shadow\"}", "t", &s), -EINVAL);
    CHECK_CONTAINS(err, "t.path: must name a file");
    CHECK_INT_EQ(open_text("{\"port\":\"file\"}", "t", &s), -EINVAL);
    CHECK_CONTAINS(err, "t.path");
    CHECK(s == NULL);
    wisp_test_rmtree(root);
}

static void test_sensor_config(void)
{
    env.sysfs_root = "/nonexistent";
    struct wisp_sensor *s = NULL;
    CHECK_INT_EQ(open_text("{\"port\":\"gpio\"}", "t1", &s), -EINVAL);
    CHECK_STR_EQ(err, "t1.port: unknown port \"gpio\" (known: iio, w1, thermal, sim, file)");
    CHECK_INT_EQ(open_text("{\"zone\":\"thermal_zone0\"}", "t1", &s), -EINVAL);
    CHECK_STR_EQ(err, "t1.port: required");
    CHECK_INT_EQ(open_text("{\"port\":1}", "t1", &s), -EINVAL);
    CHECK_STR_EQ(err, "t1.port: must be a string");
    CHECK_INT_EQ(open_text("[1]", "t1", &s), -EINVAL);
    CHECK_STR_EQ(err, "t1: must be an object");
    CHECK_INT_EQ(open_text("{\"port\":\"thermal\",\"zone\":\"z\",\"unit\":1}", "t1", &s), -EINVAL);
    CHECK_STR_EQ(err, "t1.unit: must be a string");
    CHECK_INT_EQ(open_text("{\"port\":\"thermal\",\"zone\":\"z\",\"scale\":\"2\"}", "t1", &s),
                 -EINVAL);
    CHECK_STR_EQ(err, "t1.scale: must be a number");
    CHECK_INT_EQ(open_text("{\"port\":\"thermal\",\"zone\":\"z\",\"offset\":null}", "t1", &s),
                 -EINVAL);
    CHECK_STR_EQ(err, "t1.offset: must be a number");
    CHECK_INT_EQ(open_text("{\"port\":\"thermal\",\"zone\":\"z\",\"Scale\":2}", "t1", &s), -EINVAL);
    CHECK_STR_EQ(err, "t1.Scale: unknown key (allowed: port, unit, scale, offset, zone)");
    CHECK_INT_EQ(open_text("{\"port\":\"thermal\"}", "t1", &s), -EINVAL);
    CHECK_STR_EQ(err, "t1.zone: required");
    CHECK_INT_EQ(open_text("{\"port\":\"thermal\",\"zone\":\"z\"}", "", &s), -EINVAL);
    CHECK_INT_EQ(open_text("{\"port\":\"thermal\",\"zone\":\"z\",\"unit\":\"K\"}", "t1", &s), 0);
    if (s) {
        CHECK_STR_EQ(wisp_sensor_name(s), "t1");
        CHECK(wisp_sensor_ops_of(s) == wisp_sensor_port_find("thermal"));
        struct wisp_reading r;
        CHECK_INT_EQ(wisp_sensor_read(s, &r, err, sizeof(err)), -ENOENT);
        CHECK_STR_EQ(err, "t1: /nonexistent/class/thermal/z/temp: No such file or directory");
    }
    wisp_sensor_close(s);
    wisp_sensor_close(NULL);

    /* A port's open can be called directly, with a NULL env (defaults to /sys). */
    cJSON *obj = cJSON_Parse("{\"port\":\"thermal\",\"zone\":\"no_such_zone_xyz\"}");
    void *state = NULL;
    const struct wisp_sensor_ops *ops = wisp_sensor_port_find("thermal");
    CHECK_INT_EQ(ops->open(obj, "d", NULL, &state, err, sizeof(err)), 0);
    if (state) {
        struct wisp_reading r;
        CHECK_INT_EQ(ops->read(state, &r, err, sizeof(err)), -ENOENT);
        CHECK_STR_EQ(err, "/sys/class/thermal/no_such_zone_xyz/temp: No such file or directory");
        ops->close(state);
    }
    cJSON_Delete(obj);
}

int main(int argc, char **argv)
{
    static const struct wisp_check_test tests[] = {
        {"registry", test_registry},
        {"iio", test_iio},
        {"iio_config", test_iio_config},
        {"w1", test_w1},
        {"thermal", test_thermal},
        {"sim_constant", test_sim_constant},
        {"sim_sine", test_sim_sine},
        {"sim_random_walk", test_sim_random_walk},
        {"sim_csv", test_sim_csv},
        {"sensor_config", test_sensor_config},
        {"file", test_file},
    };
    return WISP_CHECK_RUN(argc, argv, tests);
}
