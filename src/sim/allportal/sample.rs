//! The sample catalogue: module schemas and objects for `demo` and the flow tests, with small real
//! files generated in code (a valid PNG, a valid PDF, CSV and JSON pricing sheets).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::model::{FieldSchema, ModuleSchema};

/// Seed data: module schemas plus objects (with optional media).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Catalogue {
    #[serde(default)]
    pub modules: Vec<ModuleSchema>,
    #[serde(default)]
    pub objects: Vec<SeedObject>,
}

/// One seeded object: fields in the API's `[{value, dimensions}]` form.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedObject {
    pub module: String,
    pub id: String,
    #[serde(default)]
    pub fields: Map<String, Value>,
    #[serde(default)]
    pub media: Option<SeedMedia>,
}

/// Original content of a seeded file object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedMedia {
    pub file_name: String,
    pub mime_type: String,
    pub content_base64: String,
}

/// Ids of the sample objects (UUIDs, as current 4ALLPORTAL versions use).
pub mod ids {
    pub const FAMILY_PUMPS: &str = "f0000000-0000-4000-8000-000000000001";
    pub const FAMILY_VALVES: &str = "f0000000-0000-4000-8000-000000000002";
    pub const PRODUCT_PUMP_A100: &str = "b0000000-0000-4000-8000-000000001001";
    pub const PRODUCT_PUMP_A200: &str = "b0000000-0000-4000-8000-000000001002";
    pub const PRODUCT_VALVE_V10: &str = "b0000000-0000-4000-8000-000000002001";
    pub const PRODUCT_VALVE_V20: &str = "b0000000-0000-4000-8000-000000002002";
    pub const FILE_A100_IMAGE: &str = "a0000000-0000-4000-8000-000000000001";
    pub const FILE_A100_DATASHEET: &str = "a0000000-0000-4000-8000-000000000002";
    pub const FILE_PRICING_CSV: &str = "a0000000-0000-4000-8000-000000000003";
    pub const FILE_PRICING_JSON: &str = "a0000000-0000-4000-8000-000000000004";
    pub const FILE_PUMPS_MANUAL: &str = "a0000000-0000-4000-8000-000000000005";
    pub const CUSTOMER_ACME: &str = "c0000000-0000-4000-8000-000000000001";
    pub const OPPORTUNITY_ACME_2025: &str = "e0000000-0000-4000-8000-000000000001";
    pub const PARTNER_DISTRIBUTOR: &str = "d0000000-0000-4000-8000-000000000001";
}

fn field(name: &str, field_type: &str) -> FieldSchema {
    FieldSchema {
        name: name.into(),
        field_type: field_type.into(),
        dimensions: Vec::new(),
        modules: Vec::new(),
    }
}

fn localized(name: &str, field_type: &str) -> FieldSchema {
    FieldSchema {
        dimensions: vec!["locale".into()],
        ..field(name, field_type)
    }
}

fn relation(name: &str, many: bool, target: &str) -> FieldSchema {
    let kind = if many {
        "CEExternalIdList"
    } else {
        "CEExternalId"
    };
    FieldSchema {
        modules: vec![target.into()],
        ..field(name, kind)
    }
}

fn module(name: &str, label: &str, fields: Vec<FieldSchema>) -> ModuleSchema {
    ModuleSchema {
        name: name.into(),
        label: label.into(),
        fields,
    }
}

fn schemas() -> Vec<ModuleSchema> {
    vec![
        module(
            "product",
            "Product",
            vec![
                localized("name", "CEVarchar"),
                localized("description", "CEText"),
                field("article_number", "CEVarchar"),
                field("status", "CEVarchar"),
                field("packaging", "CEVarchar"),
                field("compliance_class", "CEVarchar"),
                field("claims", "CEVarcharList"),
                // The product manager's OpenText login (workspace teams).
                field("product_manager", "CEVarchar"),
                relation("family", false, "product_family"),
                relation("assets", true, "file"),
                relation("partner_documents", true, "file"),
                field("approval_status", "CEVarchar"),
                field("approval_comment", "CEText"),
                field("approved_by", "CEVarchar"),
                field("approved_at", "CETimestamp"),
            ],
        ),
        module(
            "product_family",
            "Product family",
            vec![
                localized("name", "CEVarchar"),
                field("code", "CEVarchar"),
                relation("documents", true, "file"),
            ],
        ),
        module(
            "file",
            "File",
            vec![
                field("name", "CEVarchar"),
                field("mimetype", "CEVarchar"),
                field("asset_type", "CEVarchar"),
                field("status", "CEVarchar"),
                field("parent_path", "CEVarchar"),
            ],
        ),
        module(
            "customer",
            "Customer",
            vec![
                field("name", "CEVarchar"),
                field("customer_number", "CEVarchar"),
                relation("products", true, "product"),
            ],
        ),
        module(
            "opportunity",
            "Opportunity",
            vec![
                field("name", "CEVarchar"),
                relation("customer", false, "customer"),
                relation("products", true, "product"),
                field("stage", "CEVarchar"),
                // The account manager's e-mail (workspace teams).
                field("account_manager", "CEVarchar"),
            ],
        ),
        module(
            "partner",
            "Partner",
            vec![
                field("name", "CEVarchar"),
                field("partner_type", "CEVarchar"),
                // The partner's external group in OpenText (workspace teams).
                field("partner_group", "CEVarchar"),
                relation("products", true, "product"),
            ],
        ),
    ]
}

fn v(value: Value) -> Value {
    json!([{ "value": value, "dimensions": null }])
}

fn names(en: &str, de: &str) -> Value {
    json!([
        { "value": en, "dimensions": { "locale": "en_US" } },
        { "value": de, "dimensions": { "locale": "de_DE" } }
    ])
}

fn object(module: &str, id: &str, fields: Value) -> SeedObject {
    SeedObject {
        module: module.into(),
        id: id.into(),
        fields: fields.as_object().cloned().unwrap_or_default(),
        media: None,
    }
}

fn file(id: &str, name: &str, mime: &str, asset_type: &str, content: Vec<u8>) -> SeedObject {
    SeedObject {
        media: Some(SeedMedia {
            file_name: name.into(),
            mime_type: mime.into(),
            content_base64: STANDARD.encode(content),
        }),
        ..object(
            "file",
            id,
            json!({
                "name": v(json!(name)),
                "mimetype": v(json!(mime)),
                "asset_type": v(json!(asset_type)),
                "status": v(json!("approved")),
                "parent_path": v(json!("products")),
            }),
        )
    }
}

fn product(
    id: &str,
    en: &str,
    de: &str,
    number: &str,
    status: &str,
    family: &str,
    assets: &[&str],
) -> SeedObject {
    object(
        "product",
        id,
        json!({
            "name": names(en, de),
            "description": names(&format!("{en} for industrial use"), &format!("{de} für den Industrieeinsatz")),
            "article_number": v(json!(number)),
            "status": v(json!(status)),
            "packaging": v(json!("carton")),
            "compliance_class": v(json!("CE")),
            "claims": v(json!(["energy efficient"])),
            "family": v(json!(family)),
            "assets": v(json!(assets)),
        }),
    )
}

/// `object` with its product manager's OpenText login (`product_manager`, for workspace teams).
fn managed(login: &str, mut object: SeedObject) -> SeedObject {
    object
        .fields
        .insert("product_manager".into(), v(json!(login)));
    object
}

/// The id of generated product `n` (see [`large_catalogue`]).
pub fn generated_product_id(n: usize) -> String {
    format!("c1000000-0000-4000-8000-{n:012}")
}

/// The sample catalogue plus `products` generated launch-ready products, spread over the two
/// sample families, each with the sample's datasheet and image as assets: a catalogue large
/// enough to measure a backfill against (e.g. 50,000).
pub fn large_catalogue(products: usize) -> Catalogue {
    use ids::*;
    let mut catalogue = sample_catalogue();
    catalogue.objects.extend((0..products).map(|n| {
        let family = if n % 2 == 0 {
            FAMILY_PUMPS
        } else {
            FAMILY_VALVES
        };
        product(
            &generated_product_id(n),
            &format!("Generated product {n}"),
            &format!("Generiertes Produkt {n}"),
            &format!("8{n:07}"),
            "launch_ready",
            family,
            &[FILE_A100_DATASHEET, FILE_A100_IMAGE],
        )
    }));
    catalogue
}

/// Several products in two families, assets of real file types, a customer, an opportunity and a
/// partner. Ids are in [`ids`].
pub fn sample_catalogue() -> Catalogue {
    use ids::*;
    let objects = vec![
        file(
            FILE_A100_IMAGE,
            "pump-a100.png",
            "image/png",
            "image",
            sample_png(),
        ),
        file(
            FILE_A100_DATASHEET,
            "pump-a100-datasheet.pdf",
            "application/pdf",
            "datasheet",
            sample_pdf("Pump A100 datasheet"),
        ),
        file(
            FILE_PRICING_CSV,
            "pricing-2025.csv",
            "text/csv",
            "pricing",
            sample_pricing_csv(),
        ),
        file(
            FILE_PRICING_JSON,
            "pricing-2025.json",
            "application/json",
            "pricing",
            sample_pricing_json(),
        ),
        file(
            FILE_PUMPS_MANUAL,
            "pumps-manual.pdf",
            "application/pdf",
            "manual",
            sample_pdf("Pumps operating manual"),
        ),
        object(
            "product_family",
            FAMILY_PUMPS,
            json!({
                "name": names("Pumps", "Pumpen"), "code": v(json!("PUMPS")),
                "documents": v(json!([FILE_PUMPS_MANUAL])),
            }),
        ),
        object(
            "product_family",
            FAMILY_VALVES,
            json!({
                "name": names("Valves", "Ventile"), "code": v(json!("VALVES")),
            }),
        ),
        managed(
            "mschmidt",
            product(
                PRODUCT_PUMP_A100,
                "Pump A100",
                "Pumpe A100",
                "4711",
                "launch_ready",
                FAMILY_PUMPS,
                &[
                    FILE_A100_IMAGE,
                    FILE_A100_DATASHEET,
                    FILE_PRICING_CSV,
                    FILE_PRICING_JSON,
                ],
            ),
        ),
        managed(
            "lweber",
            product(
                PRODUCT_PUMP_A200,
                "Pump A200",
                "Pumpe A200",
                "4712",
                "draft",
                FAMILY_PUMPS,
                &[],
            ),
        ),
        managed(
            "lweber",
            product(
                PRODUCT_VALVE_V10,
                "Valve V10",
                "Ventil V10",
                "5810",
                "eol",
                FAMILY_VALVES,
                &[FILE_PRICING_CSV],
            ),
        ),
        managed(
            "mschmidt",
            product(
                PRODUCT_VALVE_V20,
                "Valve V20",
                "Ventil V20",
                "5820",
                "launch_ready",
                FAMILY_VALVES,
                &[],
            ),
        ),
        object(
            "customer",
            CUSTOMER_ACME,
            json!({
                "name": v(json!("ACME Corp")), "customer_number": v(json!("C-1000")),
                "products": v(json!([PRODUCT_PUMP_A100, PRODUCT_VALVE_V20])),
            }),
        ),
        object(
            "opportunity",
            OPPORTUNITY_ACME_2025,
            json!({
                "name": v(json!("ACME plant retrofit 2025")), "customer": v(json!(CUSTOMER_ACME)),
                "products": v(json!([PRODUCT_PUMP_A100])), "stage": v(json!("proposal")),
                "account_manager": v(json!("anna.koch@example.com")),
            }),
        ),
        object(
            "partner",
            PARTNER_DISTRIBUTOR,
            json!({
                "name": v(json!("Nordic Distribution AB")), "partner_type": v(json!("distributor")),
                "partner_group": v(json!("Partner - Nordic Distribution AB")),
                "products": v(json!([PRODUCT_PUMP_A100, PRODUCT_PUMP_A200])),
            }),
        ),
    ];
    Catalogue {
        modules: schemas(),
        objects,
    }
}

/// A valid 16×16 RGB PNG (a gradient), written with stored (uncompressed) deflate blocks.
pub fn sample_png() -> Vec<u8> {
    let (w, h) = (16u32, 16u32);
    let mut raw = Vec::new();
    for y in 0..h {
        raw.push(0); // filter type: none
        for x in 0..w {
            raw.extend_from_slice(&[(x * 16) as u8, (y * 16) as u8, 160]);
        }
    }
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit, truecolor, deflate, no filter, no interlace
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png_chunk(&mut png, b"IHDR", &ihdr);
    png_chunk(&mut png, b"IDAT", &zlib_stored(&raw));
    png_chunk(&mut png, b"IEND", &[]);
    png
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut crc_input = kind.to_vec();
    crc_input.extend_from_slice(data);
    out.extend_from_slice(&crc_input);
    out.extend_from_slice(&crc32(&crc_input).to_be_bytes());
}

fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = data.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        out.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}

/// A valid one-page PDF showing `title`, with a correct cross-reference table.
pub fn sample_pdf(title: &str) -> Vec<u8> {
    let text = title
        .replace('\\', "\\\\")
        .replace('(', "\\(")
        .replace(')', "\\)");
    let stream = format!("BT /F1 18 Tf 72 720 Td ({text}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_owned(),
        format!("<< /Length {} >>\nstream\n{stream}\nendstream", stream.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
    ];
    let mut pdf = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    let xref = pdf.len();
    pdf.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        pdf.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    pdf.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    pdf
}

fn sample_pricing_csv() -> Vec<u8> {
    b"article_number,currency,list_price,valid_from\n4711,EUR,1299.00,2025-01-01\n4712,EUR,1849.00,2025-01-01\n5810,EUR,89.50,2025-01-01\n5820,EUR,112.00,2025-01-01\n".to_vec()
}

fn sample_pricing_json() -> Vec<u8> {
    serde_json::to_vec_pretty(&json!({
        "currency": "EUR",
        "valid_from": "2025-01-01",
        "prices": [
            {"article_number": "4711", "list_price": 1299.00},
            {"article_number": "4712", "list_price": 1849.00}
        ]
    }))
    .expect("static JSON serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_catalogue_adds_distinct_launch_ready_products_in_both_families() {
        let sample = sample_catalogue().objects.len();
        let large = large_catalogue(1000);
        assert_eq!(large.objects.len(), sample + 1000);
        let ids: std::collections::BTreeSet<&str> =
            large.objects.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(ids.len(), large.objects.len(), "ids are distinct");
        let generated = &large.objects[sample..];
        assert!(
            generated
                .iter()
                .all(|o| o.fields["status"][0]["value"] == "launch_ready")
        );
        for family in [ids::FAMILY_PUMPS, ids::FAMILY_VALVES] {
            assert_eq!(
                generated
                    .iter()
                    .filter(|o| o.fields["family"][0]["value"] == family)
                    .count(),
                500
            );
        }
    }

    #[test]
    fn png_has_valid_signature_and_chunk_crcs() {
        let png = sample_png();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let mut pos = 8;
        let mut kinds = Vec::new();
        while pos < png.len() {
            let len = u32::from_be_bytes(png[pos..pos + 4].try_into().unwrap()) as usize;
            let body = &png[pos + 4..pos + 8 + len];
            let crc = u32::from_be_bytes(png[pos + 8 + len..pos + 12 + len].try_into().unwrap());
            assert_eq!(crc32(body), crc);
            kinds.push(String::from_utf8_lossy(&body[..4]).into_owned());
            pos += 12 + len;
        }
        assert_eq!(kinds, ["IHDR", "IDAT", "IEND"]);
        // Known CRC-32 check value.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn pdf_xref_offsets_point_at_objects() {
        let pdf = sample_pdf("Test (1)");
        let text = String::from_utf8(pdf.clone()).unwrap();
        assert!(text.starts_with("%PDF-1.4"));
        let xref_at: usize = text.lines().rev().nth(1).unwrap().parse().unwrap();
        assert!(text[xref_at..].starts_with("xref"));
        let first_offset: usize = text[xref_at..].lines().nth(3).unwrap()[..10]
            .parse()
            .unwrap();
        assert!(text[first_offset..].starts_with("1 0 obj"));
    }

    #[test]
    fn sample_relations_point_at_existing_objects() {
        let catalogue = sample_catalogue();
        let ids: Vec<&str> = catalogue.objects.iter().map(|o| o.id.as_str()).collect();
        for o in &catalogue.objects {
            for key in ["family", "assets", "products", "customer", "documents"] {
                for entry in o
                    .fields
                    .get(key)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let targets = match &entry["value"] {
                        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                        Value::String(s) => vec![s.as_str()],
                        _ => vec![],
                    };
                    for t in targets {
                        assert!(ids.contains(&t), "{} → {t}", o.id);
                    }
                }
            }
        }
    }
}
