/* sd:inpaint — a GEGL composer: repaints the white region of the mask on the aux pad. */
#include "sd_gegl_common.h"

#ifdef GEGL_PROPERTIES

SD_GEGL_COMMON_PROPERTIES
property_double(strength, "Strength", 1.0)
  description("How much to repaint inside the mask (ordinary checkpoints; 9-channel inpainting ones use 1)")
  value_range(0.01, 1.0)

#else

#define GEGL_OP_COMPOSER
#define GEGL_OP_NAME sd_inpaint
#define GEGL_OP_C_SOURCE sd-inpaint.c
#define GEGL_OP_BUNDLE
#include "gegl-op.h"

static void (*parent_finalize)(GObject*) = NULL;

static void finalize(GObject* object) {
  GeglProperties* o = GEGL_PROPERTIES(object);
  g_clear_pointer(&o->user_data, g_free);
  parent_finalize(object);
}

static void prepare(GeglOperation* operation) {
  gegl_operation_set_format(operation, "input", babl_format("R'G'B' u8"));
  gegl_operation_set_format(operation, "aux", babl_format("Y' u8"));
  gegl_operation_set_format(operation, "output", babl_format("R'G'B'A float"));
}

static GeglRectangle whole_input(GeglOperation* operation) {
  const GeglRectangle* in = gegl_operation_source_get_bounding_box(operation, "input");
  GeglRectangle none = {0, 0, 0, 0};
  return in ? *in : none;
}

static GeglRectangle get_bounding_box(GeglOperation* operation) { return whole_input(operation); }

/* The whole image and the whole mask (over the image's area), computed at once. */
static GeglRectangle get_required_for_output(GeglOperation* operation, const gchar* pad, const GeglRectangle* roi) {
  (void)pad;
  (void)roi;
  return whole_input(operation);
}

static GeglRectangle get_cached_region(GeglOperation* operation, const GeglRectangle* roi) {
  (void)roi;
  return whole_input(operation);
}

static gboolean process(GeglOperation* operation, GeglBuffer* input, GeglBuffer* aux, GeglBuffer* output,
                        const GeglRectangle* result, gint level) {
  (void)result;
  (void)level;
  GeglProperties* o = GEGL_PROPERTIES(operation);
  const GeglRectangle in = whole_input(operation);
  if (in.width <= 0 || in.height <= 0) {
    g_warning("sd:inpaint: the input is empty");
    return FALSE;
  }
  if (!aux) {
    g_warning("sd:inpaint: connect a mask to the aux pad (white = repaint)");
    return FALSE;
  }
  guchar* rgb = g_new(guchar, (gsize)in.width * in.height * 3);
  guchar* mask = g_new0(guchar, (gsize)in.width * in.height);
  gegl_buffer_get(input, &in, 1.0, babl_format("R'G'B' u8"), rgb, GEGL_AUTO_ROWSTRIDE, GEGL_ABYSS_NONE);
  gegl_buffer_get(aux, &in, 1.0, babl_format("Y' u8"), mask, GEGL_AUTO_ROWSTRIDE, GEGL_ABYSS_NONE);
  SdGeglRequest r = {0};
  SD_GEGL_REQUEST(r, o, operation, "inpaint");
  r.strength = o->strength;
  r.init_rgb = rgb;
  r.mask = mask;
  r.init_width = in.width;
  r.init_height = in.height;
  const gboolean ok = sd_gegl_render("sd:inpaint", &r, output, in.x, in.y);
  g_free(rgb);
  g_free(mask);
  return ok;
}

static void gegl_op_class_init(GeglOpClass* klass) {
  GeglOperationClass* operation_class = GEGL_OPERATION_CLASS(klass);
  GeglOperationComposerClass* composer_class = GEGL_OPERATION_COMPOSER_CLASS(klass);
  GObjectClass* object_class = G_OBJECT_CLASS(klass);
  parent_finalize = object_class->finalize;
  object_class->finalize = finalize;
  composer_class->process = process;
  operation_class->prepare = prepare;
  operation_class->get_bounding_box = get_bounding_box;
  operation_class->get_required_for_output = get_required_for_output;
  operation_class->get_cached_region = get_cached_region;
  operation_class->threaded = FALSE;
  gegl_operation_class_set_keys(operation_class, "name", "sd:inpaint", "title", "Stable Diffusion: inpaint",
                                "categories", "artistic", "description",
                                "Repaints the white region of the aux mask from a text prompt (sdgraph)", NULL);
}

#endif
